"""Groups the bronze objects by their date partition (`.../date=YYYY-MM-DD/*.bronze`), for the
jobs that process one day at a time. A page's window never crosses midnight (writers split
there), so every minute of a day is in that day's partition."""

import os
from collections import defaultdict


def bronze_days(bronze):
    days = defaultdict(list)
    for root, _, files in os.walk(bronze):
        name = os.path.basename(root)
        if not name.startswith("date="):
            continue
        days[name[5:]].extend(os.path.join(root, f) for f in files if f.endswith(".bronze"))
    return [(d, sorted(days[d])) for d in sorted(days)]
