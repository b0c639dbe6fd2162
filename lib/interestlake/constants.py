"""Names shared across the library: tables, columns, event types.

Column names are passed as arguments with these defaults so that one module
defines them; change them here, not at call sites.
"""

# Delta tables (DESIGN.md section 3). The names are fixed: analysts query them.
EVENTS = "events"
REVIEWS = "reviews"
ITEMS = "items"
QUARANTINE = "quarantine"
TEXT_EMBEDDINGS = "text_embeddings"
ITEM_EMBEDDINGS = "item_embeddings"
USER_INTERESTS = "user_interests"
RECOMMENDATIONS = "recommendations"
PIPELINE_RUNS = "pipeline_runs"
LANDING_FILES = "landing_files"
# Interest topics per user from what they wrote (interestlake.pipeline.topics).
USER_TOPICS = "user_topics"
# Every lake table, in the order listings show them. lake/schemas.py declares each one;
# this list is here too so that readers which never import Spark (the in-process SQL
# engine, `interestlake status`) know the names.
LAKE_TABLES = (
    EVENTS, REVIEWS, ITEMS, QUARANTINE, TEXT_EMBEDDINGS, ITEM_EMBEDDINGS, USER_INTERESTS, RECOMMENDATIONS,
    USER_TOPICS, PIPELINE_RUNS, LANDING_FILES,
)

# Landing kinds: sub-folders of the landing root (DESIGN.md section 4).
LANDING_KINDS = (EVENTS, REVIEWS, ITEMS)

# Steps of `interestlake maintain`, in the order they run.
MAINTENANCE_STEPS = ("retention", "compact", "vacuum", "checkpoint")

# Columns.
COL_EVENT_ID = "event_id"
COL_REVIEW_ID = "review_id"
COL_USER_ID = "user_id"
COL_ITEM_ID = "item_id"
COL_EVENT_TYPE = "event_type"
COL_TS = "ts"
COL_TEXT = "text"
COL_RATING = "rating"
COL_TITLE = "title"
COL_DESCRIPTION = "description"
COL_CATEGORY = "category"
COL_PRICE = "price"
COL_UPDATED_AT = "updated_at"
COL_TEXT_HASH = "text_hash"
COL_ENCODER_VERSION = "encoder_version"
COL_EMBEDDING = "embedding"
COL_SCORE = "score"
COL_RANK = "rank"
COL_REASON = "reason"
COL_RUN_ID = "run_id"
# True when a text of the row was cut to the ingest limit (validation.MAX_TEXT_CHARS).
COL_TRUNCATED = "truncated"
COL_TOPIC = "topic"
COL_WEIGHT = "weight"

# Behaviour event types, weakest to strongest signal.
EVENT_VIEW = "view"
EVENT_CLICK = "click"
EVENT_CART = "cart"
EVENT_PURCHASE = "purchase"
EVENT_SEARCH = "search"
EVENT_RATE = "rate"
EVENT_TYPES = (EVENT_VIEW, EVENT_CLICK, EVENT_CART, EVENT_PURCHASE, EVENT_SEARCH, EVENT_RATE)
# Pseudo event type for a written review in the user's history.
EVENT_REVIEW = "review"
# Pseudo event type of a low-rated item or negative review text: a negative weight.
EVENT_DISLIKE = "dislike"

RATING_MIN = 1
RATING_MAX = 5
