"""InterestLake: near-line, LLM-encoder recommendations on Spark and Delta Lake."""

__version__ = "0.1.0"
