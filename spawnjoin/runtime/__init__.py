"""The runtime: an asyncio scheduler of reasoning threads (`Scheduler`) and the `solve` entry points."""

from spawnjoin.runtime._scheduler import Scheduler
from spawnjoin.runtime._solve import solve, solve_sync

__all__ = ["Scheduler", "solve", "solve_sync"]
