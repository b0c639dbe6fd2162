"""Negative feedback: which ratings and review texts are dislikes.

A rating at or below ``steer.negative.max_rating`` (1-2 stars) is a dislike; so is a
review rated at most ``review_text_max_rating`` whose text says so ("waste of money",
"broke after a week", "退货"). The phrase list is one regular expression that Spark
(Java) and Python read alike, so the pipeline and its tests agree.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from interestlake import constants as C
from interestlake.models.interest import InterestParams
from interestlake.settings import SteerSettings

NEGATIVE_PHRASES = (
    r"\b(?:terrible|awful|horrible|useless|junk|garbage|worthless|disappointed|disappointing|disappointment)\b",
    r"\b(?:waste of (?:money|time)|do not buy|don't buy|not worth|returned (?:it|them)|sent (?:it|them) back)\b",
    r"\b(?:broke|broken|stopped working|fell apart|cheaply made|poor quality|does not work|doesn't work)\b",
    r"\b(?:hate|hated|regret)\b",
    r"(?:太差|很差|垃圾|失望|退货|后悔|不好用|坏了|质量差|别买)",
)
NEGATIVE_TEXT_PATTERN = "(?i)(?:" + "|".join(NEGATIVE_PHRASES) + ")"
_NEGATIVE = re.compile(NEGATIVE_TEXT_PATTERN)


@dataclass(frozen=True)
class DislikeRule:
    """When a rated entry counts against its item (see ``steer.negative``)."""

    max_rating: float
    review_text_max_rating: float

    def is_dislike(self, rating: float | None, text: str | None = None) -> bool:
        """True for a low rating, or a middling one with negative text."""
        if rating is None:
            return False
        if rating <= self.max_rating:
            return True
        return rating <= self.review_text_max_rating and is_negative_text(text)


def is_negative_text(text: str | None) -> bool:
    """True when the text holds one of the negative phrases (English or Chinese)."""
    return bool(text) and _NEGATIVE.search(text) is not None


def dislike_rule(steer: SteerSettings) -> DislikeRule | None:
    """The rule marking dislikes, or None when negative feedback is off."""
    if not (steer.enabled and steer.negative.enabled):
        return None
    return DislikeRule(steer.negative.max_rating, steer.negative.review_text_max_rating)


def with_dislike_weight(params: InterestParams, steer: SteerSettings) -> InterestParams:
    """Interest parameters where ``dislike`` entries weigh ``steer.negative.weight`` (negative)."""
    if dislike_rule(steer) is None:
        return params
    return dataclasses.replace(params, event_weights={**params.event_weights, C.EVENT_DISLIKE: steer.negative.weight})
