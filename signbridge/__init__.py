"""SignBridge: signing documents from the chat, on Temporal."""

import warnings

# pyHanko imports cryptography's DSA key types, which cryptography 51 deprecates with a warning at
# import: printed by every command on start (before the one line an operator should read).
# SignBridge never makes or accepts DSA signatures; pyHanko will move off the import itself.
warnings.filterwarnings("ignore", message="DSA is deprecated", module="pyhanko")
