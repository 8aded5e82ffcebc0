"""Test helpers usable by any fusecube test: synthetic COGs, fake STAC items, a loopback server.

Nothing here touches the internet: the server binds 127.0.0.1 on a free port and is started
and stopped by the test that uses it.
"""

from fusecube.testing.cog import write_cog
from fusecube.testing.server import Fault, FaultPlan, LoopbackServer
from fusecube.testing.stac import make_item

__all__ = ["Fault", "FaultPlan", "LoopbackServer", "make_item", "write_cog"]
