"""The data package's error: the message names the field or path and how to get the data."""


class DataError(ValueError):
    pass
