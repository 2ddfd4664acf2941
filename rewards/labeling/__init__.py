"""The human labeling app (``textenv serve-labeling``, extra ``labeling``): FastAPI + uvicorn.

See :mod:`rewards.labeling.app` for the pages, API and security model and :mod:`rewards.labeling.store`
for the tables it keeps next to the comparisons.
"""

from rewards.labeling.store import AlreadyAnswered, Conflict, LabelingStore

__all__ = ["AlreadyAnswered", "Conflict", "LabelingStore", "create_app", "serve"]


def __getattr__(name: str):
    if name in ("create_app", "serve"):
        from rewards.labeling import app

        return getattr(app, name)
    raise AttributeError(name)
