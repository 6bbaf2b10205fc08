"""What the benchmarks share: the resident memory of a process and all its children."""

import psutil


def tree_rss(process: psutil.Process) -> int:
    """Bytes resident in `process` and its descendants right now (children that just exited count as 0)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total
