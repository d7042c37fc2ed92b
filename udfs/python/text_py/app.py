"""Text transforms: the building blocks of word count, in Python.

`text_py#split_words` (flat_map) splits a line on white space, `text_py#pair_one` (map) turns
a word into the keyed record `(word, 1)` for `reduce_by_key`, `text_py#uppercase` and
`text_py#lowercase` (map) change case, `text_py#non_empty` (filter) drops blank lines,
`text_py#key_number` (map) reads `KEY INTEGER` lines as keyed records and fails the batch,
naming the line, on anything else. The same functions as the Rust `udfs/text`.
"""

import sluice


@sluice.flat_map
def split_words(line: str) -> list[str]:
    """Split a line into words on white space."""
    return line.split()


@sluice.map
def pair_one(word: str) -> tuple[str, int]:
    """`word -> (word, 1)`."""
    return (word, 1)


@sluice.map
def key_number(line: str) -> tuple[str, int]:
    """`"key 12" -> (key, 12)`; anything else raises, which fails the batch naming the line."""
    parts = line.split()
    if len(parts) != 2 or not parts[1].lstrip("+-").isdigit():
        raise ValueError(f"{line!r} is not `KEY INTEGER`")
    return (parts[0], int(parts[1]))


@sluice.map
def uppercase(line: str) -> str:
    """The line in upper case."""
    return line.upper()


@sluice.map
def lowercase(line: str) -> str:
    """The line in lower case."""
    return line.lower()


@sluice.filter
def non_empty(line: str) -> bool:
    """Whether the line has anything but white space."""
    return bool(line.strip())


WitWorld, Transforms = sluice.export_transforms(
    split_words, pair_one, key_number, uppercase, lowercase, non_empty
)
