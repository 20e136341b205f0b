"""The SSH gateway: asyncssh server for clients, asyncssh client to the target."""

import warnings

# asyncssh imports cryptography's DSA classes at import time; cryptography ≥ 51 warns that
# DSA is deprecated. jitgate never offers or accepts DSA keys, so the warning says nothing
# to an operator: silence exactly that one.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh\.", append=False)
