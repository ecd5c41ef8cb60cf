"""Data sources behind one interface (:class:`MultiLabelDataset`) and the LightningDataModule."""

from mlattack.data.base import DataFormatError, MultiLabelDataset

__all__ = ["DataFormatError", "MultiLabelDataset"]
