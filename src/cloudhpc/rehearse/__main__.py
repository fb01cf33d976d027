"""python -m cloudhpc.rehearse serve"""

import sys

from cloudhpc.rehearse.daemon import serve

if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(sys.argv[2] if len(sys.argv) > 2 else "Owner")
