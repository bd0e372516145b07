"""A CloudStack management server for the async-job APIs, with workload and fault injection.

`/client/api` behaves like CloudStack (signatures, sessions, errors, listAsyncJobs,
queryAsyncJobResult); `/sim/...` is the control and inspection API (see README.md).
"""

from cloudstack_simulator.accounts import Directory, load_accounts
from cloudstack_simulator.app import Simulator, SimulatorConfig

__all__ = ["Directory", "Simulator", "SimulatorConfig", "load_accounts"]
