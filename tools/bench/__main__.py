import sys

from tools.bench.brokers import BenchError
from tools.bench.run import main

try:
    sys.exit(main())
except BenchError as exc:
    print(f"bench: error: {exc}", file=sys.stderr)
    sys.exit(2)
