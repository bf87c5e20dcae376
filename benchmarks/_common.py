"""Helpers shared by the benchmarks (run as scripts: ``python benchmarks/bench_*.py``)."""
import platform


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
