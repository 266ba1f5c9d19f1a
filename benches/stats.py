"""Confidence intervals for the benchmark scripts' summaries (run.sh, ab.sh, headers.sh
import it from benches/). The VM's speed drifts between rounds by more than the builds and
proxies differ, so a ratio is taken within each round and these say how far the rounds'
noise leaves the true value from the measured one."""

import math
import statistics

# Student's t, two-sided 95%, by degrees of freedom (1-30); past 30, 1.96 (within 4%).
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
       2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
       2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def _half_width(xs):
    df = len(xs) - 1
    t = T95[df - 1] if df <= len(T95) else 1.96
    return t * statistics.stdev(xs) / math.sqrt(len(xs))


def ratio_interval(ratios):
    """Paired ratios' geometric mean and its 95% interval (a t interval on their logarithms),
    as "1.014 [0.902, 1.139]"; "-" with fewer than 3."""
    if len(ratios) < 3:
        return "-"
    logs = [math.log(x) for x in ratios]
    m, h = statistics.mean(logs), _half_width(logs)
    return f"{math.exp(m):.3f} [{math.exp(m - h):.3f}, {math.exp(m + h):.3f}]"


def mean_interval(xs):
    """The mean and its 95% t interval, as "0.82 [0.30, 1.34]"; "-" with fewer than 3."""
    if len(xs) < 3:
        return "-"
    m, h = statistics.mean(xs), _half_width(xs)
    return f"{m:.2f} [{m - h:.2f}, {m + h:.2f}]"
