"""Protocol-faithful HTTP test servers on 127.0.0.1 (stdlib only): a fault-injecting OpenAI-compatible
completions server and an SGLang ``/generate`` server, both driven by a deterministic toy model."""

from tests.servers.fault_openai import Fault, FaultServer
from tests.servers.sglang_server import SGLangServer

__all__ = ["Fault", "FaultServer", "SGLangServer"]
