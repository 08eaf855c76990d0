"""`python -m gdn.train ...` is `gdn-train ...`."""
from gdn.train.main import main

main()
