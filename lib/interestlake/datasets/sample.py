"""Seeded sample shop data written as landing files (DESIGN.md section 4).

The demo, the end-to-end tests and the benchmarks all need input that reads
like a real shop: a catalogue with believable titles and prices, users with
distinct tastes, a view -> click -> cart -> purchase funnel, typed searches and
reviews whose tone matches their rating. Everything is drawn from one
``random.Random(seed)`` so the same arguments always give byte-identical files.

Layout written under ``landing_dir``::

    items/items-0001.jsonl          catalogue, ISO-8601 ``updated_at``
    events/events-0001.jsonl.gz     first ~70% of the events by time, gzipped
    events/events-0002.jsonl        the rest, plain JSON lines
    reviews/reviews-0001.jsonl      reviews, ``ts`` as epoch seconds
"""

from __future__ import annotations

import math
import os
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from interestlake import constants as C
from interestlake.datasets.landing import write_jsonl

__all__ = ["SAMPLE_CATEGORIES", "SampleSummary", "generate_sample"]


# --------------------------------------------------------------------------
# Catalogue vocabulary
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _ProductType:
    """One kind of product inside a category, with its own vocabulary."""

    name: str
    price_low: float
    price_high: float
    lines: tuple[str, ...]
    attributes: tuple[str, ...]
    # Noun phrases that complete "built with ..." (for books: a blurb).
    materials: tuple[str, ...]
    # Whole sentences about a feature.
    features: tuple[str, ...]
    # Singular noun phrases a reviewer praises or blames ("the tone").
    aspects: tuple[str, ...]
    plural: bool = False

    @property
    def noun(self) -> str:
        """The name as it reads mid-sentence: lower case, acronyms kept ("MIDI keyboard controller")."""
        return " ".join(word if word.isupper() and len(word) > 1 else word.lower() for word in self.name.split())


@dataclass(frozen=True)
class _Category:
    """A shop category: brands, product types, uses and search phrasing."""

    name: str
    # Relative share of the catalogue and of first-choice tastes.
    weight: float
    # Categories in the same group are "related" when picking a user's tastes.
    group: str
    brands: tuple[str, ...]
    product_types: tuple[_ProductType, ...]
    # Activities that complete "for ..." ("weekend gigs").
    uses: tuple[str, ...]
    # Query templates with {q} (product type), {budget}, {brand}, {attribute}.
    query_templates: tuple[str, ...]
    # Hand-written queries: (text, product type name or "" for any).
    queries: tuple[tuple[str, str], ...]
    queries_zh: tuple[tuple[str, str], ...]
    title_template: str = "{brand} {line} {ptype}{attribute}"
    # Books read "Title: A Jazz Novel by Author, Paperback"; gear often has no attribute.
    attribute_always: bool = False
    intro_templates: tuple[str, ...] = (
        "The {brand} {line} {noun} {be} built with {material}.",
        "Built with {material}, {this_item} {be} made for {use}.",
        "{brand} designed the {line} around {material}, with {use} in mind.",
        "This {noun} from {brand} combines {material} with a clean, practical design.",
    )
    closing_templates: tuple[str, ...] = (
        "A great choice for {use}.",
        "Well suited to {use}.",
        "Backed by a two-year manufacturer warranty.",
        "Ideal for {use}.",
    )


def _pt(
    name: str,
    price: tuple[float, float],
    lines: tuple[str, ...],
    attributes: tuple[str, ...],
    materials: tuple[str, ...],
    features: tuple[str, ...],
    aspects: tuple[str, ...],
    plural: bool = False,
) -> _ProductType:
    return _ProductType(name, price[0], price[1], lines, attributes, materials, features, aspects, plural)


_GUITARS = _Category(
    name="guitars",
    weight=1.1,
    group="music",
    brands=("Larkwood", "Redtail", "Ostrava", "Calloway", "Brightwater"),
    product_types=(
        _pt(
            "Electric Guitar",
            (249, 1899),
            ("Player S-Style", "Vintera", "Classic '62", "Nova Custom", "Studio Pro", "Hollowline"),
            ("Maple Neck", "Rosewood Fingerboard", "Sunburst Finish", "Olympic White", "HSS Pickups", "Left-Handed"),
            ("an alder body and a bolt-on maple neck", "a lightweight ash body", "a mahogany body and a flamed maple top"),
            (
                "Two single-coil pickups and a bridge humbucker cover everything from glassy cleans to crunchy rock.",
                "A two-point tremolo stays in tune even after heavy bends.",
                "Locking tuners make string changes quick and painless.",
                "A modern C-shaped neck and medium-jumbo frets make lead playing easy.",
            ),
            ("the tone", "the neck", "the tuning stability", "the fretwork", "the finish"),
        ),
        _pt(
            "Acoustic Guitar",
            (149, 1499),
            ("Dreadnought D-10", "Parlor P-2", "Grand Auditorium GA-5", "Traveler", "Heritage OM"),
            ("Solid Spruce Top", "Natural Gloss", "with Built-In Pickup", "Cutaway", "3/4 Size"),
            (
                "a solid Sitka spruce top and mahogany back and sides",
                "a solid cedar top and rosewood back and sides",
                "laminated sapele back and sides",
            ),
            (
                "Its warm, balanced voice suits strumming and fingerpicking alike.",
                "The slim neck profile and low action are friendly to beginners.",
                "An onboard preamp with a built-in tuner lets you plug straight into a PA.",
            ),
            ("the sound projection", "the action", "the intonation", "the build quality"),
        ),
        _pt(
            "Bass Guitar",
            (299, 1599),
            ("Jazz J-4", "Precision P-4", "Thunder Five", "Groove Deluxe"),
            ("4-String", "5-String", "Fretless", "Black Finish", "Short Scale"),
            ("an alder body and a roasted maple neck", "a swamp ash body", "a lightweight basswood body"),
            (
                "Active electronics with a three-band EQ give a punchy, modern low end.",
                "A split-coil pickup delivers the classic thump that sits well in a mix.",
                "The short-scale neck is comfortable for players with smaller hands.",
            ),
            ("the low end", "the neck", "the active EQ", "the weight"),
        ),
        _pt(
            "Guitar Amplifier",
            (99, 1299),
            ("Blues Junior", "Katana 50", "Tube Combo 30", "Mini Practice 10"),
            ("1x12 Combo", "2x12 Combo", "with Built-In Effects", "with Headphone Out"),
            ("a birch plywood cabinet and a 12-inch ceramic speaker", "all-tube circuitry", "a compact solid-state design"),
            (
                "A spring reverb and a foot-switchable boost channel cover most gigs.",
                "A headphone output and USB recording make silent practice easy.",
                "The clean channel stays clear even at rehearsal volume.",
            ),
            ("the clean tone", "the overdrive", "the reverb", "the volume"),
        ),
        _pt(
            "Capo",
            (9, 39),
            ("Quick-Change", "Trigger", "Partial", "Spring Pro"),
            ("Black", "Nickel", "for 6-String Guitars", "for Classical Guitars"),
            ("aircraft-grade aluminium and a padded silicone grip", "a zinc alloy frame"),
            (
                "It clamps on with one hand and will not pull the strings out of tune.",
                "The low-profile design stays out of the way of your fretting hand.",
            ),
            ("the spring tension", "the grip", "the build quality"),
        ),
        _pt(
            "Guitar Strings",
            (6, 29),
            ("Nickel Wound", "Phosphor Bronze", "Coated", "Pure Nickel"),
            ("Light 10-46", "Medium 12-54", "3-Pack", "Extra Light 9-42"),
            ("nickel-plated steel wrapped around a hex core", "phosphor bronze windings"),
            (
                "A thin coating keeps them bright for months instead of weeks.",
                "They settle in quickly and hold their tuning through long sessions.",
            ),
            ("the tone", "the durability", "the feel"),
            plural=True,
        ),
        _pt(
            "Effects Pedal",
            (49, 349),
            ("Overdrive OD-1", "Analog Delay", "Tape Echo", "Fuzzbox", "Chorus CE-2", "Hall Reverb"),
            ("True Bypass", "Compact", "with Tap Tempo"),
            ("a rugged die-cast metal enclosure", "an all-analog signal path"),
            (
                "Three knobs and a true-bypass footswitch keep it simple on stage.",
                "It runs on a standard 9V supply and fits on any pedalboard.",
            ),
            ("the sound", "the build quality", "the control layout"),
        ),
    ),
    uses=("practising at home", "weekend gigs", "recording demos", "learning my first chords", "jamming with friends"),
    query_templates=(
        "cheap {q} for a beginner",
        "best {q} under {budget}",
        "{brand} {q}",
        "{q} {attribute}",
        "{q} for small hands",
    ),
    queries=(
        ("cheap acoustic guitar for a beginner", "Acoustic Guitar"),
        ("gift for a guitarist", ""),
        ("light gauge electric guitar strings", "Guitar Strings"),
        ("practice amp with headphone jack", "Guitar Amplifier"),
        ("blues overdrive pedal", "Effects Pedal"),
        ("left handed electric guitar", "Electric Guitar"),
    ),
    queries_zh=(("便宜的电吉他", "Electric Guitar"), ("初学者民谣吉他", "Acoustic Guitar"), ("吉他变调夹", "Capo")),
)

_KEYBOARDS = _Category(
    name="keyboards & pianos",
    weight=0.9,
    group="music",
    brands=("Kawamura", "Nordhaven", "Castell", "Yarrow", "Arturo"),
    product_types=(
        _pt(
            "Digital Piano",
            (449, 2999),
            ("CP-88 Home", "Concert Grand", "Etude 200", "Salon S3"),
            ("88 Weighted Keys", "Rosewood Finish", "with Bench", "Polished Ebony", "Compact Slimline"),
            ("graded hammer-action keys and a sampled concert grand", "a wooden cabinet and triple-sensor keys"),
            (
                "Three pedals and a half-damper sustain feel close to an acoustic piano.",
                "Bluetooth audio and MIDI let you play along with lesson apps.",
                "Two headphone jacks make it easy to practise late at night.",
            ),
            ("the key action", "the piano sound", "the speaker system", "the build quality"),
        ),
        _pt(
            "Stage Piano",
            (699, 3499),
            ("Stage 73", "Gig Pro", "Electra", "Rhodes-Style EP"),
            ("88 Keys", "73 Keys", "Red Finish"),
            ("a steel chassis and hammer-action keys", "a lightweight aluminium body"),
            (
                "Split and layer modes put strings under piano with one button.",
                "Balanced outputs and a sturdy chassis are ready for touring.",
            ),
            ("the key action", "the electric piano tone", "the portability"),
        ),
        _pt(
            "MIDI Keyboard Controller",
            (59, 449),
            ("KeyLab 49", "MiniKey 25", "Launch 61", "Oxide 88"),
            ("25 Keys", "49 Keys", "61 Keys", "with Drum Pads"),
            ("velocity-sensitive synth-action keys", "a compact, USB-powered design"),
            (
                "Eight backlit pads and assignable knobs map straight into most DAWs.",
                "It is class-compliant, so it works without drivers on Mac, Windows and iPad.",
            ),
            ("the keybed", "the pad sensitivity", "the DAW integration"),
        ),
        _pt(
            "Synthesizer",
            (299, 2499),
            ("Polyform 6", "Monowave", "Aurora 8", "Drift Analog"),
            ("37 Keys", "Desktop Module", "with Sequencer", "Paraphonic"),
            ("a true analog filter and voltage-controlled oscillators", "a hybrid digital-analog engine"),
            (
                "A 64-step sequencer and arpeggiator make it easy to build a groove.",
                "Every parameter has its own knob, so sound design stays hands-on.",
            ),
            ("the filter", "the sound design", "the sequencer", "the build quality"),
        ),
        _pt(
            "Keyboard Stand",
            (29, 129),
            ("X-Frame", "Z-Stand Pro", "Double Tier"),
            ("Adjustable Height", "Heavy Duty", "Foldable"),
            ("double-braced steel tubing", "a powder-coated steel frame"),
            ("It folds flat in seconds and holds up to 50 kilograms.",),
            ("the stability", "the height adjustment"),
        ),
        _pt(
            "Sustain Pedal",
            (15, 79),
            ("SP-3", "Damper Pro", "Piano-Style"),
            ("Universal Polarity", "Half-Damper"),
            ("a chrome piano-style pedal and a rubber base", "a metal pedal plate"),
            ("A polarity switch makes it work with almost any keyboard.",),
            ("the feel", "the grip on the floor"),
        ),
        _pt(
            "Piano Bench",
            (49, 229),
            ("Duet", "Artist Adjustable", "Studio Classic"),
            ("Black Leatherette", "Walnut", "with Storage"),
            ("solid wood legs and a padded leatherette seat", "a steel frame and thick foam cushion"),
            ("A hinged lid hides sheet music storage under the seat.",),
            ("the comfort", "the stability", "the finish"),
        ),
    ),
    uses=("practising scales every evening", "church services", "my kids' piano lessons", "producing music at home"),
    query_templates=(
        "best {q} under {budget}",
        "{q} {attribute}",
        "{brand} {q}",
        "{q} for a beginner",
        "quiet {q} for an apartment",
    ),
    queries=(
        ("digital piano with weighted keys", "Digital Piano"),
        ("88 key keyboard for lessons", "Digital Piano"),
        ("midi controller for ableton", "MIDI Keyboard Controller"),
        ("analog synth for techno", "Synthesizer"),
        ("gift for a pianist", ""),
    ),
    queries_zh=(("电钢琴 88键 重锤", "Digital Piano"), ("MIDI键盘 推荐", "MIDI Keyboard Controller")),
)

_DRUMS = _Category(
    name="drums & percussion",
    weight=0.8,
    group="music",
    brands=("Kestrel", "Grovewood", "Steelhead", "Marlow", "Ravenna"),
    product_types=(
        _pt(
            "Acoustic Drum Kit",
            (499, 2999),
            ("Stage Custom", "Session Birch", "Rock Five", "Jazz Bop"),
            ("5-Piece", "4-Piece", "with Hardware", "Shell Pack", "Wine Red Lacquer"),
            ("birch shells and heavy-duty chrome hardware", "all-maple shells", "poplar shells with a wrap finish"),
            (
                "Suspended tom mounts let the shells resonate freely.",
                "It comes with a double-braced hardware pack and a chain-drive kick pedal.",
            ),
            ("the sound of the toms", "the hardware", "the bass drum punch", "the finish"),
        ),
        _pt(
            "Electronic Drum Kit",
            (399, 2499),
            ("TD-Mesh 10", "Practice Pro", "Studio E-Kit"),
            ("Mesh Heads", "with Bluetooth", "Compact"),
            ("mesh pads on a sturdy rack", "quiet rubber pads and a steel rack"),
            (
                "Mesh heads are quiet enough for apartment practice and feel like real drums.",
                "A built-in coach mode helps you lock in with the click.",
            ),
            ("the feel of the mesh heads", "the sound module", "the noise level", "the rack"),
        ),
        _pt(
            "Snare Drum",
            (149, 699),
            ("Black Beauty", "Supraphonic", "Maple Deluxe"),
            ("14x5.5", "14x6.5", "Brass Shell"),
            ("a hand-hammered brass shell", "a 10-ply maple shell", "a seamless steel shell"),
            ("Die-cast hoops give a tight rimshot and stable tuning.",),
            ("the crack", "the sensitivity", "the tuning stability"),
        ),
        _pt(
            "Cymbal",
            (59, 449),
            ("Avedis Classic", "Dark Cast", "Bright Brilliant"),
            ("16-inch Crash", "20-inch Ride", "14-inch Hi-Hats", "18-inch China"),
            ("cast B20 bronze", "hand-hammered B20 bronze", "sheet B8 bronze"),
            ("It opens up quickly with a shimmering, complex wash.",),
            ("the wash", "the stick definition", "the sustain"),
        ),
        _pt(
            "Drumsticks",
            (8, 24),
            ("Classic 5A", "Rock 5B", "Jazz 7A"),
            ("Wood Tip", "Nylon Tip", "4-Pair Pack"),
            ("straight-grain American hickory", "Japanese white oak"),
            ("Every pair is weight-matched and pitch-paired.",),
            ("the balance", "the durability", "the grip"),
            plural=True,
        ),
        _pt(
            "Cajon",
            (79, 299),
            ("Street Box", "Flamenco", "Peruvian Classic"),
            ("with Snare Wires", "Natural", "with Gig Bag"),
            ("a birch body and a thin mahogany playing surface", "Baltic birch plywood"),
            ("Adjustable snare wires add as much buzz as you like.",),
            ("the bass tone", "the snare buzz", "the build quality"),
        ),
        _pt(
            "Practice Pad",
            (19, 59),
            ("Quiet Tone", "RealFeel", "Double-Sided"),
            ("12-inch", "6-inch", "with Stand"),
            ("gum rubber over a wooden base", "a soft silicone surface"),
            ("It gives a natural rebound while keeping the neighbours happy.",),
            ("the rebound", "the noise level"),
        ),
    ),
    uses=("rehearsals with my band", "quiet practice in an apartment", "worship team gigs", "teaching students"),
    query_templates=(
        "best {q} under {budget}",
        "{q} {attribute}",
        "{brand} {q}",
        "{q} for a beginner drummer",
    ),
    queries=(
        ("gift for a drummer", ""),
        ("quiet electronic drum kit for an apartment", "Electronic Drum Kit"),
        ("jazz ride cymbal dark", "Cymbal"),
        ("5a drumsticks hickory", "Drumsticks"),
        ("cajon with bag", "Cajon"),
    ),
    queries_zh=(("电子鼓 家用 静音", "Electronic Drum Kit"), ("架子鼓 初学者", "Acoustic Drum Kit")),
)

_RECORDING = _Category(
    name="recording & audio",
    weight=0.9,
    group="music",
    brands=("Audiomark", "Bellhaven", "Sonorus", "Voxley", "Fieldline"),
    product_types=(
        _pt(
            "Audio Interface",
            (99, 899),
            ("Solo 2i2", "Studio 4x4", "Apollo Twin", "Track 8"),
            ("2-In 2-Out", "4-In 4-Out", "USB-C", "with DSP"),
            ("low-noise preamps and 24-bit/192 kHz converters", "an aluminium unibody chassis"),
            (
                "Direct monitoring gives zero-latency playback while you record.",
                "It is bus-powered, so one USB-C cable is all you need.",
            ),
            ("the preamp quality", "the latency", "the driver support", "the build quality"),
        ),
        _pt(
            "Condenser Microphone",
            (79, 999),
            ("Studio 1", "NT-One", "Vintage Tube", "Podcast Pro"),
            ("Large-Diaphragm", "Cardioid", "with Shock Mount", "Multi-Pattern"),
            ("a one-inch gold-sputtered capsule", "a transformerless circuit and a hand-tuned capsule"),
            (
                "A low self-noise figure makes it great for vocals and acoustic guitar.",
                "A switchable pad and high-pass filter handle loud sources.",
            ),
            ("the clarity", "the self-noise", "the vocal sound", "the shock mount"),
        ),
        _pt(
            "Dynamic Microphone",
            (49, 399),
            ("Broadcast 7", "Stage 58", "Podcaster"),
            ("Cardioid", "with XLR and USB", "Black"),
            ("a rugged steel grille and an internal pop filter", "a supercardioid capsule"),
            ("It rejects room noise, so it shines for podcasts in untreated rooms.",),
            ("the noise rejection", "the voice sound", "the build quality"),
        ),
        _pt(
            "Studio Headphones",
            (59, 399),
            ("DT 770", "MDR Reference", "Monitor 50X"),
            ("Closed-Back", "Open-Back", "80 Ohm", "with Detachable Cable"),
            ("velour ear pads and a spring-steel headband", "50 mm drivers and memory-foam pads"),
            ("A flat, honest response helps you make mixing decisions you can trust.",),
            ("the comfort", "the sound isolation", "the bass response", "the soundstage"),
            plural=True,
        ),
        _pt(
            "Studio Monitors",
            (149, 1199),
            ("HS5", "Reference 6", "Nearfield 8"),
            ("Pair", "5-inch", "8-inch", "Bluetooth"),
            ("bi-amped woofers and silk-dome tweeters", "rear-ported MDF cabinets"),
            ("Room-correction switches tame bass build-up in small rooms.",),
            ("the stereo imaging", "the bass response", "the clarity"),
            plural=True,
        ),
        _pt(
            "Pop Filter",
            (12, 39),
            ("Double Mesh", "Metal Screen"),
            ("6-inch", "with Gooseneck"),
            ("a double nylon mesh on a flexible gooseneck", "a perforated metal screen"),
            ("It stops plosives without dulling the top end.",),
            ("the clamp", "the plosive control"),
        ),
        _pt(
            "XLR Cable",
            (9, 39),
            ("Pro Series", "Studio Flex"),
            ("10 ft", "25 ft", "2-Pack"),
            ("oxygen-free copper and braided shielding", "gold-plated connectors"),
            ("A braided shield keeps hum and interference out of long runs.",),
            ("the shielding", "the connector quality"),
        ),
    ),
    uses=("home recording", "my weekly podcast", "mixing in a small room", "streaming on Twitch"),
    query_templates=(
        "best {q} under {budget}",
        "{q} for podcasting",
        "{brand} {q}",
        "{q} {attribute}",
        "{q} for home studio",
    ),
    queries=(
        ("podcast microphone usb", "Dynamic Microphone"),
        ("studio headphones for mixing", "Studio Headphones"),
        ("audio interface for guitar and vocals", "Audio Interface"),
        ("home studio starter kit", ""),
        ("best mic for vocals under 300", "Condenser Microphone"),
    ),
    queries_zh=(("录音麦克风 推荐", "Condenser Microphone"), ("监听耳机 混音", "Studio Headphones")),
)

_CAMPING = _Category(
    name="camping & hiking",
    weight=1.2,
    group="outdoors",
    brands=("Ridgeway", "Northfold", "Trailmark", "Alpenglow", "Cairnline"),
    product_types=(
        _pt(
            "Backpacking Tent",
            (129, 649),
            ("Copper Spur", "Half Dome", "Featherlite", "Summit Trail"),
            ("2-Person", "1-Person", "3-Season", "Ultralight", "Freestanding"),
            ("ripstop nylon and aluminium DAC poles", "silnylon and a single carbon pole", "a polyester fly with taped seams"),
            (
                "Two doors and two vestibules mean nobody climbs over anyone at night.",
                "It packs down to the size of a water bottle and weighs under a kilogram and a half.",
                "Colour-coded clips make pitching in the rain quick.",
            ),
            ("the weight", "the waterproofing", "the setup", "the interior space"),
        ),
        _pt(
            "Sleeping Bag",
            (69, 449),
            ("Down Mummy", "Synthetic Trail", "Quilt 20"),
            ("20°F", "35°F", "Regular", "Long", "800-Fill Down"),
            ("800-fill-power hydrophobic down", "synthetic insulation and a ripstop shell"),
            (
                "A draft collar and contoured hood keep warmth where you need it.",
                "It compresses into a stuff sack smaller than a loaf of bread.",
            ),
            ("the warmth", "the packed size", "the zipper", "the weight"),
        ),
        _pt(
            "Camping Stove",
            (29, 179),
            ("PocketRocket 2", "JetBoil Flash", "Whisperlite", "TrailChef"),
            ("Ultralight", "with Piezo Igniter", "Canister", "Multi-Fuel"),
            ("titanium and stainless steel", "an aluminium burner head"),
            (
                "It boils a litre of water in about three and a half minutes.",
                "Serrated pot supports hold everything from a mug to a small pan.",
            ),
            ("the boil time", "the simmer control", "the packed size"),
        ),
        _pt(
            "Hiking Backpack",
            (79, 329),
            ("Atmos 50", "Daybreak 25", "Exos 58", "Ridgeline 40"),
            ("50L", "25L Daypack", "Women's Fit", "with Rain Cover"),
            ("high-tenacity nylon and a ventilated mesh back panel", "a lightweight aluminium frame"),
            (
                "An adjustable torso length and padded hip belt carry heavy loads comfortably.",
                "Side stretch pockets hold two water bottles within easy reach.",
            ),
            ("the fit", "the hip belt", "the pocket layout", "the ventilation"),
        ),
        _pt(
            "Trekking Poles",
            (39, 179),
            ("Carbon Trail", "Alpine FL", "Z-Fold"),
            ("Pair", "Collapsible", "with Cork Grips"),
            ("carbon fibre shafts and cork grips", "aluminium shafts with flick locks"),
            ("Quick flick locks adjust the length with gloves on.",),
            ("the locking mechanism", "the grip comfort", "the weight"),
            plural=True,
        ),
        _pt(
            "Headlamp",
            (19, 89),
            ("Spot 400", "Trail Beam", "Night Hiker"),
            ("Rechargeable", "350 Lumens", "with Red Light"),
            ("a waterproof housing and a soft headband", "a USB-C rechargeable battery"),
            ("A red-light mode keeps your night vision intact around camp.",),
            ("the brightness", "the battery life", "the comfort"),
        ),
        _pt(
            "Water Filter",
            (24, 99),
            ("Squeeze", "Trail Straw", "Gravity 4L"),
            ("0.1 Micron", "Lightweight", "with Pouch"),
            ("a hollow-fibre membrane", "BPA-free plastic"),
            ("It removes 99.9999% of bacteria from streams and lakes.",),
            ("the flow rate", "the ease of use"),
        ),
    ),
    uses=("weekend backpacking trips", "car camping with the kids", "thru-hiking", "summer festivals"),
    query_templates=(
        "lightweight {q} under {budget}",
        "{q} for two",
        "{q} for a weekend trip",
        "{brand} {q}",
        "{q} {attribute}",
    ),
    queries=(
        ("lightweight tent for two under 200", "Backpacking Tent"),
        ("ultralight camping stove", "Camping Stove"),
        ("warm sleeping bag for winter camping", "Sleeping Bag"),
        ("gift for a hiker", ""),
        ("rechargeable headlamp for camping", "Headlamp"),
        ("day pack for hiking with water bottle pockets", "Hiking Backpack"),
    ),
    queries_zh=(("轻量双人帐篷", "Backpacking Tent"), ("露营炉具 便携", "Camping Stove"), ("登山杖 碳纤维", "Trekking Poles")),
)

_COFFEE = _Category(
    name="coffee & tea",
    weight=1.2,
    group="kitchen",
    brands=("Crowfield Roasters", "Morning Ritual", "Harbor Bean", "Kyoto Leaf", "Steamline"),
    product_types=(
        _pt(
            "Whole Bean Coffee",
            (11, 29),
            ("House Blend", "Ethiopia Yirgacheffe", "Colombia Huila", "Espresso Forte", "Sumatra Mandheling"),
            ("Medium Roast, 12 oz", "Dark Roast, 1 lb", "Decaf, 12 oz", "Light Roast, 2 lb"),
            ("single-origin Arabica beans roasted in small batches", "Fair Trade beans roasted to order"),
            (
                "Expect notes of dark chocolate, toasted almond and a clean, sweet finish.",
                "Bright citrus and jasmine notes shine in a pour-over.",
                "Roast dates are printed on every bag so you always brew it fresh.",
            ),
            ("the flavour", "the aroma", "the freshness", "the roast level"),
        ),
        _pt(
            "Ground Coffee",
            (9, 24),
            ("Breakfast Blend", "French Roast", "Swiss Water Decaf"),
            ("Medium Grind, 12 oz", "Fine Grind for Espresso", "Coarse Grind for French Press"),
            ("Arabica beans ground for drip machines", "Swiss Water decaffeinated beans"),
            ("A nitrogen-flushed bag keeps it fresh for weeks.",),
            ("the flavour", "the grind size", "the freshness"),
        ),
        _pt(
            "Loose Leaf Tea",
            (8, 34),
            ("Uji Sencha", "Earl Grey Supreme", "Tieguanyin Oolong", "Assam Breakfast", "Chamomile Dream"),
            ("100 g Tin", "50 g Pouch", "Organic"),
            ("whole leaves hand-picked in spring", "organic leaves blended with bergamot oil"),
            (
                "Each spoonful can be steeped two or three times.",
                "It brews a smooth cup with no bitterness.",
            ),
            ("the flavour", "the aroma", "the packaging"),
        ),
        _pt(
            "Pour-Over Coffee Maker",
            (19, 69),
            ("V60 Style", "Chemex Classic", "Kalita Wave"),
            ("02 Size", "6-Cup", "Glass", "Ceramic"),
            ("heat-resistant borosilicate glass", "porcelain with spiral ribs"),
            ("Spiral ribs and a large opening give an even, clean extraction.",),
            ("the extraction", "the build quality", "the ease of cleaning"),
        ),
        _pt(
            "Burr Coffee Grinder",
            (39, 299),
            ("Encore", "Virtuoso", "Hand Mill Pro", "Baratza-Style 40"),
            ("Conical Burr", "Manual", "40 Grind Settings"),
            ("hardened steel conical burrs", "stainless steel burrs and an aluminium body"),
            ("Forty grind settings go from Turkish fine to French-press coarse.",),
            ("the grind consistency", "the noise level", "the retention"),
        ),
        _pt(
            "Gooseneck Kettle",
            (29, 179),
            ("Stagg EKG", "Pour Master", "Precision Pour"),
            ("Electric", "Stovetop", "with Temperature Control", "Matte Black"),
            ("brushed stainless steel", "a counterbalanced handle and stainless body"),
            ("Variable temperature control holds the water within a degree.",),
            ("the pour control", "the heating speed", "the temperature accuracy"),
        ),
        _pt(
            "Espresso Machine",
            (199, 1499),
            ("Bambino Plus", "Classic Pro", "Barista Express", "Dual Boiler"),
            ("with Steam Wand", "Semi-Automatic", "with Built-In Grinder"),
            ("a stainless steel body and a commercial 58 mm portafilter", "a thermocoil heater"),
            ("A PID controller keeps brew temperature stable shot after shot.",),
            ("the espresso quality", "the steam wand", "the warm-up time", "the build quality"),
        ),
    ),
    uses=("my morning cup", "slow weekend breakfasts", "the office kitchen", "entertaining guests"),
    query_templates=(
        "{q} {attribute}",
        "best {q} under {budget}",
        "{brand} {q}",
        "{q} gift set",
        "organic {q}",
    ),
    queries=(
        ("decaf whole bean coffee", "Whole Bean Coffee"),
        ("gift for a coffee lover", ""),
        ("low acid coffee beans", "Whole Bean Coffee"),
        ("japanese green tea sencha", "Loose Leaf Tea"),
        ("grinder for pour over", "Burr Coffee Grinder"),
        ("espresso machine for beginners", "Espresso Machine"),
    ),
    queries_zh=(("手冲咖啡豆 中度烘焙", "Whole Bean Coffee"), ("乌龙茶 散装", "Loose Leaf Tea"), ("咖啡磨豆机", "Burr Coffee Grinder")),
    # Beans and leaves are not "built"; these read right for food and machines alike.
    intro_templates=(
        "The {brand} {line} {noun} {be} made with {material}.",
        "{brand}'s {line} {noun} starts with {material}.",
        "Made with {material}, {this_item} {be} a fine match for {use}.",
    ),
)

_BOOKS = _Category(
    name="books",
    weight=1.3,
    group="books",
    brands=("Clara Whitfield", "Marcus Bell", "Ines Okafor", "Theo Lindqvist", "Ruth Calloway", "Daniel Ashby", "Mei Tanaka"),
    product_types=(
        _pt(
            "Jazz Novel",
            (12, 28),
            ("Blue Notes After Midnight", "The Last Set at Minton's", "Smoke and Brass", "A Trumpet in the Rain"),
            ("Paperback", "Hardcover", "Large Print"),
            (
                "a smoky tale of a trumpet player chasing one last gig in 1950s Harlem",
                "a story of two rival saxophonists on a New Orleans riverboat",
            ),
            ("Readers praise its vivid sense of place and its ear for dialogue.",),
            ("the writing", "the cast of characters", "the pacing", "the ending"),
        ),
        _pt(
            "History of Jazz",
            (18, 45),
            ("Swing Street", "The Birth of Bebop", "Kind of Cool", "Giants of the Tenor Sax"),
            ("Paperback", "Hardcover", "Illustrated Edition"),
            ("a lively history of the clubs, labels and players who shaped modern jazz", "a richly researched portrait of the bebop era"),
            ("It ends with a listening guide of fifty essential recordings.",),
            ("the research", "the writing", "the photography", "the listening guide"),
        ),
        _pt(
            "Hiking Guidebook",
            (15, 32),
            ("Trails of the Pacific Crest", "Alpine Day Hikes", "The Long Walk North", "Hidden Waterfalls"),
            ("Paperback", "Waterproof Edition", "2nd Edition"),
            ("a practical guide to sixty routes with elevation profiles", "a trail-by-trail guide with maps and water sources"),
            ("Each route lists distance, difficulty and the best season to go.",),
            ("the map quality", "the route detail", "the photography"),
        ),
        _pt(
            "Music Theory Workbook",
            (14, 36),
            ("Harmony from Scratch", "Chord Tones and Voicings", "Rhythm for Real Musicians"),
            ("Spiral-Bound", "Paperback", "with Audio Download"),
            ("a step-by-step workbook on scales, chords and voice leading", "a practical course in reading rhythm"),
            ("Every chapter ends with exercises and an answer key.",),
            ("the choice of exercises", "the clarity of the explanations", "the audio material"),
        ),
        _pt(
            "Running Memoir",
            (12, 30),
            ("Forty Miles Before Breakfast", "The Loneliness of the Trail", "Chasing the Sub-Three"),
            ("Paperback", "Hardcover"),
            ("an honest memoir about training for a first ultramarathon", "a funny, moving account of a late-blooming marathoner"),
            ("It mixes race stories with hard-won training advice.",),
            ("the writing", "the training advice", "the humour"),
        ),
        _pt(
            "Coffee Handbook",
            (16, 38),
            ("The World Atlas of Beans", "Brew Better at Home", "From Cherry to Cup"),
            ("Hardcover", "Paperback", "Illustrated Edition"),
            ("an illustrated guide to origins, roasting and brewing methods", "a hands-on guide to pour-over and espresso at home"),
            ("Brew ratios and troubleshooting charts make it easy to dial in a recipe.",),
            ("the photography", "the brewing advice", "the writing"),
        ),
        _pt(
            "Mystery Novel",
            (10, 26),
            ("The Lighthouse Keeper's Daughter", "Murder at the Roastery", "Frost on the Ridge"),
            ("Paperback", "Hardcover", "Large Print"),
            ("a twisty whodunit set in a remote mountain lodge", "a cosy mystery in a small-town coffee shop"),
            ("The final twist is one readers rarely see coming.",),
            ("the plot", "the cast of characters", "the ending"),
        ),
    ),
    uses=("a rainy weekend", "a long flight", "my book club", "a gift for my dad", "the commute to work"),
    query_templates=(
        "best {q}",
        "{q} {attribute}",
        "{brand} books",
        "{q} gift",
        "new {q}",
    ),
    queries=(
        ("books about jazz history", "History of Jazz"),
        ("novel set in a jazz club", "Jazz Novel"),
        ("hiking trail guide book", "Hiking Guidebook"),
        ("music theory book for beginners", "Music Theory Workbook"),
        ("book for a marathon runner", "Running Memoir"),
        ("cozy mystery paperback", "Mystery Novel"),
    ),
    queries_zh=(("爵士乐历史 书", "History of Jazz"), ("推理小说 新书", "Mystery Novel")),
    title_template="{line}: A {ptype} by {brand}{attribute}",
    attribute_always=True,
    intro_templates=(
        "{line} by {brand} is {material}.",
        "In {line}, {brand} delivers {material}.",
        "{brand}'s {line} is {material}.",
    ),
    closing_templates=(
        "A perfect read for {use}.",
        "A thoughtful pick for {use}.",
        "Great for {use}.",
    ),
)

_RUNNING = _Category(
    name="running",
    weight=1.0,
    group="outdoors",
    brands=("Stridewell", "Pacefield", "Fleetfoot", "Kinetic Run", "Velora"),
    product_types=(
        _pt(
            "Running Shoes",
            (79, 199),
            ("Glide 5", "Tempo Racer", "Cloudstep", "Trail Grip 3", "Marathon Elite"),
            ("Men's", "Women's", "Wide Fit", "Neutral Cushioning", "Stability"),
            ("a breathable engineered mesh upper and a responsive foam midsole", "a carbon plate and nitrogen-infused foam", "a grippy rubber outsole with 5 mm lugs"),
            (
                "An 8 mm drop and soft heel counter suit easy miles and long runs.",
                "A rocker geometry keeps the stride rolling late in a marathon.",
                "Deep lugs bite into mud and loose gravel on the trail.",
            ),
            ("the cushioning", "the fit", "the grip", "the durability"),
            plural=True,
        ),
        _pt(
            "Running Shorts",
            (25, 69),
            ("Split 3-Inch", "Tempo 5-Inch", "2-in-1 Trail"),
            ("Men's", "Women's", "with Liner", "with Phone Pocket"),
            ("a lightweight recycled polyester", "a stretchy quick-dry fabric"),
            ("A zip pocket holds a phone without bouncing.",),
            ("the fit", "the pocket layout", "the fabric"),
            plural=True,
        ),
        _pt(
            "Running Jacket",
            (59, 199),
            ("Windrunner", "Storm Shell", "Packable Light"),
            ("Men's", "Women's", "Reflective", "Waterproof"),
            ("a windproof ripstop fabric", "a waterproof breathable membrane"),
            ("It packs into its own chest pocket when the sun comes out.",),
            ("the breathability", "the fit", "the waterproofing"),
        ),
        _pt(
            "GPS Running Watch",
            (129, 699),
            ("Forerunner 265", "Pace Pro", "Trail Navigator", "Coros-Style 2"),
            ("AMOLED", "with Music", "Solar", "42 mm"),
            ("a lightweight polymer case and multi-band GPS", "a sapphire lens and titanium bezel"),
            (
                "Multi-band GPS keeps pace readings accurate under tall buildings and trees.",
                "Battery life stretches to two weeks of daily training.",
            ),
            ("the GPS accuracy", "the battery life", "the app", "the heart-rate sensor"),
        ),
        _pt(
            "Hydration Vest",
            (49, 169),
            ("Ultra Vest 5L", "Race Vest 12L"),
            ("with Soft Flasks", "Unisex", "S/M"),
            ("a stretch mesh harness", "a lightweight breathable mesh"),
            ("Two soft flasks sit on the chest within easy reach.",),
            ("the fit", "the bounce", "the storage"),
        ),
        _pt(
            "Running Socks",
            (12, 29),
            ("Run Light Cushion", "Trail Crew", "No-Show Tab"),
            ("3-Pair Pack", "Merino", "Anti-Blister"),
            ("merino wool and nylon", "a moisture-wicking synthetic blend"),
            ("Seamless toes and targeted cushioning help prevent blisters.",),
            ("the cushioning", "the durability", "the fit"),
            plural=True,
        ),
        _pt(
            "Foam Roller",
            (19, 59),
            ("Grid", "Deep Tissue", "Travel"),
            ("13-inch", "Textured", "Vibrating"),
            ("a hollow core wrapped in firm EVA foam", "dense, textured foam"),
            ("It works out tight calves and quads after long runs.",),
            ("the firmness", "the texture"),
        ),
    ),
    uses=("marathon training", "easy morning runs", "trail races", "my first 10K", "running in the rain"),
    query_templates=(
        "{q} for marathon training",
        "best {q} under {budget}",
        "{q} {attribute}",
        "{brand} {q}",
        "{q} for wide feet",
    ),
    queries=(
        ("cushioned running shoes for beginners", "Running Shoes"),
        ("trail running shoes women", "Running Shoes"),
        ("gps watch with long battery life", "GPS Running Watch"),
        ("gift for a runner", ""),
        ("running shorts with phone pocket", "Running Shorts"),
    ),
    queries_zh=(("跑步鞋 男 缓震", "Running Shoes"), ("跑步手表 GPS", "GPS Running Watch")),
)

_CATEGORIES: tuple[_Category, ...] = (
    _GUITARS,
    _KEYBOARDS,
    _DRUMS,
    _RECORDING,
    _CAMPING,
    _COFFEE,
    _BOOKS,
    _RUNNING,
)

SAMPLE_CATEGORIES: tuple[str, ...] = tuple(category.name for category in _CATEGORIES)
"""Category names used in the sample catalogue, in a fixed order."""


# --------------------------------------------------------------------------
# Review vocabulary
# --------------------------------------------------------------------------

# Placeholders: {this_item} ("this capo" / "these strings"), {noun}, {obj}
# ("it" / "them"), {subj}, {be}, {have}, {aspect}, {aspect2}, {use}, {brand},
# {duration}. The first letter of each sentence is upper-cased afterwards.
_REVIEW_OPENERS = {
    "positive": (
        "Really happy with {this_item}.",
        "Bought {this_item} for {use} and {subj} {have} been great so far.",
        "Great {noun} for the price.",
        "{this_item} exceeded my expectations.",
        "{brand} got this one right.",
        "I've been using {this_item} for {duration} now and love {obj}.",
        "Arrived quickly, well packed, and {this_item} {be} even better in person.",
        "Switched to {this_item} for {use} and wish I had done it sooner.",
    ),
    "mixed": (
        "Decent {noun}, but nothing special.",
        "{this_item} {be} fine for {use}.",
        "Mixed feelings about {this_item} after {duration}.",
        "Okay {noun} overall, with a few compromises.",
        "{this_item} {be} good, not great.",
    ),
    "negative": (
        "Disappointed with {this_item}.",
        "{this_item} did not live up to the description.",
        "Bought {this_item} for {use} and regret it.",
        "Not worth the money, in my opinion.",
        "After {duration}, I gave up on {this_item}.",
        "Expected a lot more from {brand}.",
    ),
}
_REVIEW_ASPECT_SENTENCES = {
    "positive": (
        "{aspect} is excellent.",
        "{aspect} is much better than I expected at this price.",
        "I especially love {aspect}.",
        "{aspect} is spot on, and {aspect2} is great too.",
        "Really impressed by {aspect}.",
        "{aspect} has been flawless so far.",
    ),
    "mixed": (
        "{aspect} is fine, but {aspect2} could be better.",
        "{aspect} is good, though not great.",
        "I like {aspect}, less so {aspect2}.",
        "{aspect} is a bit underwhelming.",
    ),
    "negative": (
        "{aspect} was a real letdown.",
        "I had problems with {aspect} from day one.",
        "{aspect} was poor even for the price.",
        "Honestly, {aspect} is the weakest part, and {aspect2} is not much better.",
        "{aspect} felt cheap.",
    ),
}
# One sentence naming both the product and an aspect, for short reviews and
# after openers that do not name the product themselves.
_REVIEW_PRODUCT_ASPECT_SENTENCES = {
    "positive": (
        "Love {this_item}, especially {aspect}.",
        "{this_item} {be} great, and {aspect} is the best part.",
        "{aspect} on {this_item} is excellent.",
        "Very pleased with {aspect} on {this_item}.",
    ),
    "mixed": (
        "{this_item} {be} okay, but {aspect} could be better.",
        "{aspect} on {this_item} is just average.",
        "Happy enough with {this_item}, though {aspect} is hit and miss.",
    ),
    "negative": (
        "{this_item} disappointed me, mostly because of {aspect}.",
        "{aspect} on {this_item} is not acceptable at this price.",
        "Had nothing but trouble with {aspect} on {this_item}.",
    ),
}
_REVIEW_CLOSERS = {
    "positive": (
        "Would buy again.",
        "Highly recommend {obj} for {use2}.",
        "Already recommending {obj} to friends.",
        "No complaints so far.",
        "Great value.",
        "Five stars from me.",
        "Perfect for {use2}.",
    ),
    "mixed": (
        "Fine for the price.",
        "Might look for an upgrade later.",
        "Three stars feels fair.",
        "Good enough for {use2}, but shop around.",
    ),
    "negative": (
        "Would not buy again.",
        "Returned {obj} after a week.",
        "Look elsewhere.",
        "Sent {obj} back for a refund.",
        "Customer support was not much help either.",
        "Save your money.",
    ),
}
_REVIEW_DURATIONS = ("a couple of weeks", "about a month", "three weeks", "ten days", "a few weeks")
_MAX_REVIEW_CHARS = 300

# Rating distributions (weights for 1..5 stars): most buyers are happy, but a
# few items are duds and collect most of the bad ratings.
_RATING_WEIGHTS_GOOD = (0.04, 0.05, 0.11, 0.33, 0.47)
_RATING_WEIGHTS_DUD = (0.22, 0.24, 0.24, 0.18, 0.12)
_DUD_SHARE = 0.1

# Share of a session's activity per local hour (UTC here: a one-market shop):
# quiet nights, a lunch bump and an evening peak.
_HOUR_WEIGHTS = (
    0.4, 0.25, 0.15, 0.1, 0.1, 0.15, 0.4, 0.8, 1.0, 1.1, 1.2, 1.3,
    1.6, 1.5, 1.2, 1.1, 1.2, 1.4, 1.8, 2.2, 2.4, 2.2, 1.6, 0.9,
)  # fmt: skip

# Funnel conversion (per step) and follow-up probabilities.
_P_CLICK = 0.6
_P_CART = 0.7
_P_PURCHASE = 0.85
_P_RATE = 0.25
_P_REVIEW = 0.4
# Share of a user's sessions outside their favourite categories.
_P_OFF_TASTE = 0.1
# Share of picks inside a category that go to the user's preferred product types.
_P_PREFERRED_TYPE = 0.6
_P_REVISIT = 0.2
_P_CHINESE_QUERY = 0.07
_MIN_EVENTS_PER_USER = 3
# Share of events (by time) that go into the gzipped first events file.
_FIRST_EVENTS_FILE_SHARE = 0.7

_BUDGETS = (10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 1500, 2000, 3000)


# --------------------------------------------------------------------------
# Internal records
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    item_id: str
    category_index: int
    type_index: int
    brand: str
    title: str
    price: float
    popularity: float
    dud: bool

    @property
    def product_type(self) -> _ProductType:
        return _CATEGORIES[self.category_index].product_types[self.type_index]


@dataclass
class _Taste:
    """A user's favourite categories (with weights) and preferred product types."""

    categories: list[int]
    weights: list[float]
    preferred_types: dict[int, list[int]]
    searcher: bool


@dataclass(frozen=True)
class _Event:
    ts: int
    user_index: int
    seq: int
    event_type: str
    item_id: str | None = None
    text: str | None = None
    rating: int | None = None


@dataclass(frozen=True)
class _Review:
    ts: int
    user_index: int
    item_id: str
    rating: int
    text: str


@dataclass
class _UserHistory:
    """What one user has done so far; membership sets are never iterated."""

    purchased: set[str] = field(default_factory=set)
    viewed_by_category: dict[int, list[str]] = field(default_factory=dict)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSummary:
    """What :func:`generate_sample` wrote.

    Attributes:
        landing_dir: The landing root that holds ``items/``, ``events/`` and ``reviews/``.
        users: Distinct users that have at least one event.
        items: Catalogue rows written.
        events: Event rows written, over both events files.
        reviews: Review rows written.
        files: Every file written, items first, then events, then reviews.
    """

    landing_dir: Path
    users: int
    items: int
    events: int
    reviews: int
    files: tuple[Path, ...]


def generate_sample(
    landing_dir: str | os.PathLike[str],
    *,
    seed: int = 42,
    n_users: int = 300,
    n_items: int = 300,
    days: int = 60,
    end_time: datetime = datetime(2026, 11, 1, tzinfo=timezone.utc),
) -> SampleSummary:
    """Write a realistic, seeded sample shop (items, events, reviews) as landing files.

    The same arguments always produce byte-identical files; existing files
    with the same names are replaced.

    Args:
        landing_dir: Landing root; ``items/``, ``events/`` and ``reviews/`` are created under it.
        seed: Seed of the only random generator used.
        n_users: Number of users; every user gets at least three events.
        n_items: Number of catalogue items; at least one per sample category.
        days: Length of the event window that ends at ``end_time``.
        end_time: Timezone-aware end of the event window; no event or review is later.

    Returns:
        A :class:`SampleSummary` with the row counts and the files written.

    Raises:
        ValueError: If an argument is out of range or of the wrong type.
    """
    _validate(seed=seed, n_users=n_users, n_items=n_items, days=days, end_time=end_time)
    root = Path(landing_dir)
    rng = random.Random(seed)

    # Whole seconds only: the files carry second precision, and rounding the
    # window inwards keeps every written ts inside [end_time - days, end_time].
    end_epoch = math.floor(end_time.timestamp())
    start_epoch = math.ceil((end_time - timedelta(days=days)).timestamp())

    items = _build_catalogue(rng, n_items, start_epoch)
    item_rows = [row for row, _ in items]
    catalogue = [item for _, item in items]
    tastes = [_make_taste(rng) for _ in range(n_users)]
    events, reviews = _simulate(rng, catalogue, tastes, start_epoch, end_epoch)

    events.sort(key=lambda e: (e.ts, e.user_index, e.seq))
    reviews.sort(key=lambda r: (r.ts, r.user_index, r.item_id))
    event_rows = [_event_row(index, event) for index, event in enumerate(events, start=1)]
    review_rows = [_review_row(index, review) for index, review in enumerate(reviews, start=1)]

    split = _split_index(len(event_rows))
    items_path = root / C.ITEMS / "items-0001.jsonl"
    events_gz_path = root / C.EVENTS / "events-0001.jsonl.gz"
    events_path = root / C.EVENTS / "events-0002.jsonl"
    reviews_path = root / C.REVIEWS / "reviews-0001.jsonl"
    write_jsonl(items_path, item_rows)
    write_jsonl(events_gz_path, event_rows[:split])
    write_jsonl(events_path, event_rows[split:])
    write_jsonl(reviews_path, review_rows)

    return SampleSummary(
        landing_dir=root,
        users=len({event.user_index for event in events}),
        items=len(item_rows),
        events=len(event_rows),
        reviews=len(review_rows),
        files=(items_path, events_gz_path, events_path, reviews_path),
    )


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _require_int(name: str, value: object, minimum: int) -> None:
    # bool is an int subclass; True as a user count is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _validate(*, seed: object, n_users: object, n_items: object, days: object, end_time: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    _require_int("n_users", n_users, 1)
    _require_int("n_items", n_items, len(_CATEGORIES))
    _require_int("days", days, 1)
    if not isinstance(end_time, datetime):
        raise ValueError(f"end_time must be a timezone-aware datetime, got {end_time!r}")
    if end_time.tzinfo is None or end_time.utcoffset() is None:
        raise ValueError(f"end_time must be timezone-aware (e.g. tzinfo=timezone.utc), got naive {end_time.isoformat()}")


# --------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------


def _build_catalogue(rng: random.Random, n_items: int, start_epoch: int) -> list[tuple[dict, _Item]]:
    # One item per category first so every category exists even at the
    # minimum size; the rest follow the category weights.
    category_of_item = list(range(len(_CATEGORIES)))
    category_weights = [category.weight for category in _CATEGORIES]
    category_of_item += rng.choices(range(len(_CATEGORIES)), weights=category_weights, k=n_items - len(_CATEGORIES))
    rng.shuffle(category_of_item)

    titles_taken: set[str] = set()
    built: list[tuple[dict, _Item]] = []
    for index, category_index in enumerate(category_of_item, start=1):
        category = _CATEGORIES[category_index]
        type_index = rng.randrange(len(category.product_types))
        product_type = category.product_types[type_index]
        brand, line, title = _unique_title(rng, category, product_type, titles_taken)
        titles_taken.add(title)
        price = _price(rng, product_type)
        # Catalogue rows predate the event window so every event refers to a known item.
        updated_epoch = start_epoch - rng.randrange(1, 120) * 86400 + rng.randrange(8, 19) * 3600
        updated_epoch -= updated_epoch % 3600
        item = _Item(
            item_id=f"i-{index:04d}",
            category_index=category_index,
            type_index=type_index,
            brand=brand,
            title=title,
            price=price,
            # Heavy-tailed popularity gives a few best sellers and a long tail.
            popularity=min(rng.paretovariate(1.2), 50.0),
            dud=rng.random() < _DUD_SHARE,
        )
        row = {
            C.COL_ITEM_ID: item.item_id,
            C.COL_TITLE: title,
            C.COL_DESCRIPTION: _description(rng, category, product_type, brand, line),
            C.COL_CATEGORY: category.name,
            C.COL_PRICE: price,
            C.COL_UPDATED_AT: _iso(updated_epoch),
        }
        built.append((row, item))
    return built


def _unique_title(
    rng: random.Random, category: _Category, product_type: _ProductType, taken: set[str]
) -> tuple[str, str, str]:
    brand = line = title = ""
    for _ in range(40):
        brand = rng.choice(category.brands)
        line = rng.choice(product_type.lines)
        title = _title(rng, category, product_type, brand, line)
        if title not in taken:
            return brand, line, title
    # Large catalogues exhaust the combinations; an edition year keeps titles unique
    # and still reads like a real listing.
    base = title
    for year in range(2019, 2100):
        title = f"{base} ({year} Edition)"
        if title not in taken:
            return brand, line, title
    serial = 2
    while f"{base} (No. {serial})" in taken:
        serial += 1
    return brand, line, f"{base} (No. {serial})"


def _title(rng: random.Random, category: _Category, product_type: _ProductType, brand: str, line: str) -> str:
    attribute = ""
    if category.attribute_always or rng.random() < 0.75:
        attribute = ", " + rng.choice(product_type.attributes)
    return category.title_template.format(brand=brand, line=line, ptype=product_type.name, attribute=attribute)


def _price(rng: random.Random, product_type: _ProductType) -> float:
    # Log-uniform so cheap and premium models are equally common within a type.
    raw = math.exp(rng.uniform(math.log(product_type.price_low), math.log(product_type.price_high)))
    if raw >= 20:
        # Shop prices end in .99 (or a round .00 now and then).
        whole = max(1, round(raw))
        return float(whole) if rng.random() < 0.1 else round(whole - 0.01, 2)
    return round(math.floor(raw) + rng.choice((0.49, 0.95, 0.99)), 2)


def _description(
    rng: random.Random, category: _Category, product_type: _ProductType, brand: str, line: str
) -> str:
    fill = {
        "brand": brand,
        "line": line,
        "noun": product_type.noun,
        "material": rng.choice(product_type.materials),
        "use": _shop_voice(rng.choice(category.uses)),
        **_item_words(product_type),
    }
    sentences = [rng.choice(category.intro_templates).format(**fill)]
    n_sentences = rng.choices((1, 2, 3), weights=(0.15, 0.45, 0.4))[0]
    if n_sentences >= 2:
        sentences.append(rng.choice(product_type.features))
    if n_sentences == 3:
        fill["use"] = _shop_voice(rng.choice(category.uses))
        sentences.append(rng.choice(category.closing_templates).format(**fill))
    return " ".join(_capitalise(sentence) for sentence in sentences)


def _shop_voice(use: str) -> str:
    # Uses are written as a buyer says them ("my book club"); the shop says "your".
    return re.sub(r"\bmy\b", "your", use)


def _item_words(product_type: _ProductType) -> dict[str, str]:
    if product_type.plural:
        return {"this_item": f"these {product_type.noun}", "subj": "they", "obj": "them", "be": "are", "have": "have"}
    return {"this_item": f"this {product_type.noun}", "subj": "it", "obj": "it", "be": "is", "have": "has"}


# --------------------------------------------------------------------------
# Users and behaviour
# --------------------------------------------------------------------------


def _make_taste(rng: random.Random) -> _Taste:
    n_categories = len(_CATEGORIES)
    n_favourites = rng.choices((1, 2, 3), weights=(0.3, 0.45, 0.25))[0]
    first = rng.choices(range(n_categories), weights=[c.weight for c in _CATEGORIES])[0]
    favourites = [first]
    while len(favourites) < n_favourites:
        related = [
            index
            for index in range(n_categories)
            if index not in favourites and _CATEGORIES[index].group == _CATEGORIES[first].group
        ]
        unrelated = [
            index
            for index in range(n_categories)
            if index not in favourites and _CATEGORIES[index].group != _CATEGORIES[first].group
        ]
        # About half of the multi-interest users mix unrelated worlds
        # (jazz books and camping gear), the rest stay close to home.
        pool = related if related and rng.random() < 0.5 else (unrelated or related)
        favourites.append(rng.choice(pool))
    weights = sorted((rng.uniform(0.5, 1.0) ** 2 for _ in favourites), reverse=True)
    total = sum(weights)
    preferred_types = {}
    for category_index in favourites:
        n_types = len(_CATEGORIES[category_index].product_types)
        preferred_types[category_index] = rng.sample(range(n_types), k=min(n_types, rng.choice((1, 2))))
    return _Taste(
        categories=favourites,
        weights=[weight / total for weight in weights],
        preferred_types=preferred_types,
        searcher=rng.random() < 0.5,
    )


def _simulate(
    rng: random.Random,
    catalogue: list[_Item],
    tastes: list[_Taste],
    start_epoch: int,
    end_epoch: int,
) -> tuple[list[_Event], list[_Review]]:
    by_category: dict[int, list[_Item]] = {}
    by_type: dict[tuple[int, int], list[_Item]] = {}
    for item in catalogue:
        by_category.setdefault(item.category_index, []).append(item)
        by_type.setdefault((item.category_index, item.type_index), []).append(item)
    items_by_id = {item.item_id: item for item in catalogue}

    events: list[_Event] = []
    reviews: list[_Review] = []
    for user_index, taste in enumerate(tastes):
        history = _UserHistory()
        user_events: list[_Event] = []
        # Heavy-tailed activity: most users drop by a few times, a few live here.
        n_sessions = min(80, max(1, int(3.4 * rng.paretovariate(1.7))))
        session = 0
        while session < n_sessions or len(user_events) < _MIN_EVENTS_PER_USER:
            session += 1
            _run_session(
                rng, user_index, taste, history, by_category, by_type, items_by_id,
                start_epoch, end_epoch, user_events, reviews,
            )  # fmt: skip
        events.extend(user_events)
    return events, reviews


def _run_session(
    rng: random.Random,
    user_index: int,
    taste: _Taste,
    history: _UserHistory,
    by_category: dict[int, list[_Item]],
    by_type: dict[tuple[int, int], list[_Item]],
    items_by_id: dict[str, _Item],
    start_epoch: int,
    end_epoch: int,
    out_events: list[_Event],
    out_reviews: list[_Review],
) -> None:
    if rng.random() < _P_OFF_TASTE:
        others = [index for index in range(len(_CATEGORIES)) if index not in taste.categories]
        category_index = rng.choice(others)
        preferred: list[int] = []
    else:
        category_index = rng.choices(taste.categories, weights=taste.weights)[0]
        preferred = taste.preferred_types[category_index]
    category = _CATEGORIES[category_index]

    # Offsets from the session start; the start is chosen once the length is known.
    steps: list[tuple[int, str, str | None, str | None]] = []
    offset = 0

    def step(event_type: str, item_id: str | None = None, text: str | None = None) -> None:
        nonlocal offset
        steps.append((offset, event_type, item_id, text))
        offset += rng.randint(8, 240)

    target_type: int | None = None
    budget: float | None = None
    p_search = 0.4 if taste.searcher else 0.05
    if rng.random() < p_search:
        query, target_type, budget = _search_query(rng, category, preferred)
        step(C.EVENT_SEARCH, text=query)

    n_views = rng.choices((1, 2, 3, 4, 5, 6), weights=(0.3, 0.27, 0.2, 0.12, 0.07, 0.04))[0]
    seen_in_session: set[str] = set()
    cart: list[str] = []
    for _ in range(n_views):
        item = _pick_item(
            rng, category_index, preferred, target_type, budget, history, by_category, by_type, seen_in_session
        )
        if item is None:
            break
        seen_in_session.add(item.item_id)
        viewed = history.viewed_by_category.setdefault(category_index, [])
        if item.item_id not in viewed:
            viewed.append(item.item_id)
        step(C.EVENT_VIEW, item.item_id)
        if rng.random() >= _P_CLICK:
            continue
        step(C.EVENT_CLICK, item.item_id)
        if item.item_id in history.purchased or rng.random() >= _P_CART:
            continue
        step(C.EVENT_CART, item.item_id)
        cart.append(item.item_id)

    # Checkout at the end of the session, after every view of the carted items.
    purchases: list[tuple[int, str]] = []
    for item_id in cart:
        if rng.random() < _P_PURCHASE:
            purchases.append((offset, item_id))
            history.purchased.add(item_id)
            step(C.EVENT_PURCHASE, item_id)

    duration = steps[-1][0] if steps else 0
    session_start = _session_start(rng, start_epoch, end_epoch - duration)
    for offset_s, event_type, item_id, text in steps:
        out_events.append(_Event(session_start + offset_s, user_index, len(out_events), event_type, item_id, text))

    for offset_s, item_id in purchases:
        purchase_ts = session_start + offset_s
        item = items_by_id[item_id]
        rating = _rating(rng, item)
        if rng.random() < _P_RATE:
            rate_ts = _after(rng, purchase_ts, end_epoch, 2 * 3600, 10 * 86400)
            if rate_ts is not None:
                out_events.append(_Event(rate_ts, user_index, len(out_events), C.EVENT_RATE, item_id, rating=rating))
        if rng.random() < _P_REVIEW:
            review_ts = _after(rng, purchase_ts, end_epoch, 6 * 3600, 21 * 86400)
            if review_ts is not None:
                text = _review_text(rng, item, rating)
                out_reviews.append(_Review(review_ts, user_index, item_id, rating, text))


def _pick_item(
    rng: random.Random,
    category_index: int,
    preferred: list[int],
    target_type: int | None,
    budget: float | None,
    history: _UserHistory,
    by_category: dict[int, list[_Item]],
    by_type: dict[tuple[int, int], list[_Item]],
    seen_in_session: set[str],
) -> _Item | None:
    if target_type is not None and rng.random() < 0.85:
        pool = by_type.get((category_index, target_type), [])
    elif preferred and rng.random() < _P_PREFERRED_TYPE:
        pool = [item for type_index in preferred for item in by_type.get((category_index, type_index), [])]
    else:
        pool = []
    if not pool:
        pool = by_category[category_index]
    if budget is not None:
        pool = [item for item in pool if item.price <= budget] or pool
    pool = [item for item in pool if item.item_id not in seen_in_session]

    # People come back to things they looked at before; that is how most
    # purchases happen after several visits.
    viewed = history.viewed_by_category.get(category_index, [])
    if viewed and rng.random() < _P_REVISIT:
        candidates = [item_id for item_id in viewed if item_id not in seen_in_session]
        revisit = {item.item_id: item for item in pool}
        candidates = [item_id for item_id in candidates if item_id in revisit]
        if candidates:
            return revisit[rng.choice(candidates)]
    if not pool:
        return None
    return rng.choices(pool, weights=[item.popularity for item in pool])[0]


def _search_query(
    rng: random.Random, category: _Category, preferred: list[int]
) -> tuple[str, int | None, float | None]:
    """A query text, the product type it targets (or None) and its price cap (or None)."""
    type_names = [product_type.name for product_type in category.product_types]
    roll = rng.random()
    if roll < _P_CHINESE_QUERY:
        text, type_name = rng.choice(category.queries_zh)
        return text, (type_names.index(type_name) if type_name else None), None
    if roll < 0.45:
        text, type_name = rng.choice(category.queries)
        budget = _budget_in(text)
        return text, (type_names.index(type_name) if type_name else None), budget

    type_index = rng.choice(preferred) if preferred else rng.randrange(len(category.product_types))
    product_type = category.product_types[type_index]
    templates = list(category.query_templates)
    budgets = [b for b in _BUDGETS if product_type.price_low * 1.3 <= b <= product_type.price_high]
    if not budgets:
        templates = [t for t in templates if "{budget}" not in t] or ["{q}"]
    template = rng.choice(templates)
    budget = float(rng.choice(budgets)) if "{budget}" in template else None
    attribute = rng.choice(product_type.attributes).lower().replace(",", "")
    text = template.format(
        q=product_type.noun,
        budget=int(budget) if budget is not None else "",
        brand=rng.choice(category.brands).lower(),
        attribute=attribute,
    )
    return text, type_index, budget


def _budget_in(text: str) -> float | None:
    # Hand-written queries such as "... under 200" carry their own price cap.
    words = text.split()
    for previous, word in zip(words, words[1:]):
        if previous == "under" and word.isdigit():
            return float(word)
    return None


def _session_start(rng: random.Random, earliest: int, latest: int) -> int:
    """A session start in [earliest, latest], preferring the shop's busy hours."""
    latest = max(earliest, latest)
    day_zero = earliest - earliest % 86400
    n_days = (latest - day_zero) // 86400 + 1
    for _ in range(20):
        hour = rng.choices(range(24), weights=_HOUR_WEIGHTS)[0]
        candidate = day_zero + rng.randrange(n_days) * 86400 + hour * 3600 + rng.randrange(3600)
        if earliest <= candidate <= latest:
            return candidate
    # The window is too short for a busy hour to fit: any time will do.
    return rng.randint(earliest, latest)


def _after(rng: random.Random, ts: int, end_epoch: int, min_delay: int, max_delay: int) -> int | None:
    """A time strictly after ``ts`` and not after ``end_epoch``, or None when there is no room."""
    room = end_epoch - ts
    if room < 60:
        return None
    if room < min_delay:
        return ts + rng.randint(60, room)
    return ts + rng.randint(min_delay, min(max_delay, room))


def _rating(rng: random.Random, item: _Item) -> int:
    weights = _RATING_WEIGHTS_DUD if item.dud else _RATING_WEIGHTS_GOOD
    return rng.choices(range(C.RATING_MIN, C.RATING_MAX + 1), weights=weights)[0]


def _review_text(rng: random.Random, item: _Item, rating: int) -> str:
    tone = "positive" if rating >= 4 else ("mixed" if rating == 3 else "negative")
    product_type = item.product_type
    category = _CATEGORIES[item.category_index]
    aspect, aspect2 = rng.sample(product_type.aspects, 2)
    # Two different uses so an opener and a closer never repeat the same phrase.
    uses = rng.sample(category.uses, 2)
    fill = {
        "noun": product_type.noun,
        "aspect": aspect,
        "aspect2": aspect2,
        "use": uses[0],
        "use2": uses[1],
        "brand": item.brand,
        "duration": rng.choice(_REVIEW_DURATIONS),
        **_item_words(product_type),
    }
    closers = _REVIEW_CLOSERS[tone]
    if rating != 5:
        closers = tuple(c for c in closers if c != "Five stars from me.")
    # Every review names the product and an aspect; the opener and closer vary
    # the length (1-3 sentences).
    shape = rng.choices(("aspect", "opener+aspect", "aspect+closer", "opener+aspect+closer"), weights=(0.1, 0.35, 0.2, 0.35))[0]
    sentences: list[str] = []
    if shape.startswith("opener"):
        sentences.append(rng.choice(_REVIEW_OPENERS[tone]))
    names_product = any("{this_item}" in sentence or "{noun}" in sentence for sentence in sentences)
    aspect_sentences = _REVIEW_ASPECT_SENTENCES if names_product else _REVIEW_PRODUCT_ASPECT_SENTENCES
    sentences.append(rng.choice(aspect_sentences[tone]))
    if shape.endswith("closer"):
        sentences.append(rng.choice(closers))
    text = " ".join(_capitalise(sentence.format(**fill)) for sentence in sentences)
    while len(text) > _MAX_REVIEW_CHARS and len(sentences) > 1:
        sentences.pop()
        text = " ".join(_capitalise(sentence.format(**fill)) for sentence in sentences)
    return text


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def _event_row(index: int, event: _Event) -> dict:
    row: dict = {
        C.COL_EVENT_ID: f"e-{index:06d}",
        C.COL_USER_ID: _user_id(event.user_index),
        C.COL_ITEM_ID: event.item_id,
        C.COL_EVENT_TYPE: event.event_type,
        C.COL_TS: _iso(event.ts),
    }
    if event.text is not None:
        row[C.COL_TEXT] = event.text
    if event.rating is not None:
        row[C.COL_RATING] = event.rating
    return row


def _review_row(index: int, review: _Review) -> dict:
    return {
        C.COL_REVIEW_ID: f"r-{index:05d}",
        C.COL_USER_ID: _user_id(review.user_index),
        C.COL_ITEM_ID: review.item_id,
        C.COL_RATING: review.rating,
        C.COL_TEXT: review.text,
        C.COL_TS: review.ts,
    }


def _user_id(user_index: int) -> str:
    return f"u-{user_index + 1:04d}"


def _split_index(n_events: int) -> int:
    if n_events < 2:
        return n_events
    return max(1, min(n_events - 1, round(n_events * _FIRST_EVENTS_FILE_SHARE)))


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def review_sentences() -> list[str]:
    """Every review sentence template of the sample, filled with plain words.

    For benchmarks that need realistic English review text of any length.
    """
    fill = {"this_item": "this guitar", "subj": "it", "have": "has", "be": "is", "obj": "it", "noun": "amplifier",
            "brand": "Fender", "use": "daily practice", "use2": "beginners", "duration": "about a month",
            "aspect": "the build quality"}
    templates = [
        sentence
        for pool in (_REVIEW_OPENERS, _REVIEW_ASPECT_SENTENCES, _REVIEW_PRODUCT_ASPECT_SENTENCES, _REVIEW_CLOSERS)
        for sentences in pool.values()
        for sentence in sentences
    ]
    return [re.sub(r"\{(\w+)\}", lambda m: fill.get(m.group(1), "it"), t) for t in templates]
