"""rerankd: a production reranking server for cross-encoders."""

from rerankd.client import AsyncClient, Client
from rerankd.errors import (
    BackendFailed,
    InvalidInput,
    ModelNotFound,
    NotReady,
    Overloaded,
    RerankError,
)
from rerankd.ranking import RankedDocument
from rerankd.reranker import Reranker

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "BackendFailed",
    "Client",
    "InvalidInput",
    "ModelNotFound",
    "NotReady",
    "Overloaded",
    "RankedDocument",
    "RerankError",
    "Reranker",
    "__version__",
]
