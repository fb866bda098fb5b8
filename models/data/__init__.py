"""Dataset loaders: one ``Dataset`` shape for MovieLens and SASRec-format data."""

from models.data.dataset import DataFormatError, Dataset, Split, leave_one_out
from models.data.sources import BUNDLED, load_dataset

__all__ = ["BUNDLED", "DataFormatError", "Dataset", "Split", "leave_one_out", "load_dataset"]
