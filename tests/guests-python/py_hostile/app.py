"""Python UDFs that misbehave, so the tests can see the sandbox hold.

`spin` (map) never returns: the host's CPU deadline must interrupt it. `fail_on_bad` (map)
raises on a line starting with `bad`: the batch's error must carry the exception's type and
message and the record. `hog` (map) allocates until the memory cap stops it. `upper` (map)
behaves, so a job can show the component works at all.
"""

import sluice


@sluice.map
def spin(line: str) -> str:
    """Loop forever."""
    n = 0
    while True:
        n += 1


@sluice.map
def fail_on_bad(line: str) -> str:
    """Raise on a line starting with `bad`."""
    if line.startswith("bad"):
        raise ValueError(f"cannot read {line!r}")
    return line


@sluice.map
def hog(line: str) -> str:
    """Allocate 1 MiB blocks until something stops it."""
    blocks = []
    while True:
        blocks.append(bytearray(1 << 20))


@sluice.map
def upper(line: str) -> str:
    """The line in upper case."""
    return line.upper()


WitWorld, Transforms = sluice.export_transforms(spin, fail_on_bad, hog, upper)
