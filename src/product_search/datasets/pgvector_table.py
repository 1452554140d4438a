"""Placeholder: the pgvector table dataset is being written (issue 5)."""

from kedro.io.core import AbstractDataset


class PgVectorTableDataset(AbstractDataset):
    def __init__(self, **kwargs):
        self._kwargs = kwargs

    def load(self):
        raise NotImplementedError

    def save(self, data):
        raise NotImplementedError

    def _describe(self):
        return {}
