"""spawnjoin: adaptive parallel reasoning — models that spawn() child threads and join() their results.

Layout (one concept per module):

* `spawnjoin.runtime`   the scheduler (threads as coroutines) and `solve()` / `solve_sync()`
* `spawnjoin.dialects`  how spawn/join look in text: `apr`, `threadweaver` (contract in `dialects/base.py`)
* `spawnjoin.backends`  where tokens come from: embedded engine, OpenAI-compatible, SGLang (`backends/base.py`)
* `spawnjoin.budget`    `Budget`, the limits of a solve
* `spawnjoin.events`    typed runtime events and the `EventStream` the view and trace consume
* `spawnjoin.trace`     the thread tree (`Trace`), `Metrics` and their exact definitions
* `spawnjoin.view`      the rich live view, trace replay and HTML (the only place that renders)
* `spawnjoin.tasks`     problem families (Countdown): prompt format, answers, verifiers, solvers

`import spawnjoin` never imports torch.
"""

from spawnjoin._exceptions import (
    BackendError,
    BudgetExceeded,
    ConfigError,
    ConnectError,
    ContextWindowExceeded,
    DialectError,
    ModelNotFound,
    RateLimited,
    ServerError,
    SpawnJoinError,
    Timeout,
)
from spawnjoin.backends.base import Backend, SamplingParams
from spawnjoin.budget import Budget
from spawnjoin.dialects import APRDialect, Dialect, ThreadWeaverDialect, get_dialect
from spawnjoin.events import EventStream
from spawnjoin.result import SolveResult
from spawnjoin.runtime import solve, solve_sync
from spawnjoin.trace import Metrics, Trace

__version__ = "0.1.0"

__all__ = [
    "APRDialect",
    "Backend",
    "BackendError",
    "Budget",
    "BudgetExceeded",
    "ConfigError",
    "ConnectError",
    "ContextWindowExceeded",
    "Dialect",
    "DialectError",
    "EventStream",
    "Metrics",
    "ModelNotFound",
    "RateLimited",
    "SamplingParams",
    "ServerError",
    "SolveResult",
    "SpawnJoinError",
    "ThreadWeaverDialect",
    "Timeout",
    "Trace",
    "get_dialect",
    "solve",
    "solve_sync",
]
