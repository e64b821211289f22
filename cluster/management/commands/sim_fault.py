"""`manage.py sim_fault NODE overheat|xid|down|clear`: break (or mend) a simulated node on demand.

For demos and end-to-end tests of the safeguards: an overheating node heats up over the next
tens of seconds (faster under load), an XID shows on GPU 0 at once, a node that goes down fails
the jobs on it. `clear` removes the fault; the thermal guard still lets go only after the cool
window, and never after an XID. Only the simulator backend takes faults.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cluster.backends import get_backend
from cluster.backends.base import BackendRejected
from cluster.models import SimNode
from cluster.simulator.backend import FAULTS, SimulatorBackend

CHOICES = (*FAULTS, "clear")


class Command(BaseCommand):
    help = "Inject a fault (overheat, xid, down) into a simulated node, or clear it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("node", help="a simulated node, e.g. onprem-a100-01")
        parser.add_argument("fault", choices=CHOICES)
        parser.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        backend = get_backend()
        if not isinstance(backend, SimulatorBackend):
            raise CommandError(f"faults can only be injected into the simulator, not the {backend.name} backend")
        node, fault = options["node"], options["fault"]
        backend.ensure_grid()
        current = SimNode.objects.filter(name=node).first()
        if current is None:
            raise CommandError(f"no simulated node called {node!r}")
        if options["dry_run"]:
            self.stdout.write(f"would set {node} fault {current.fault or 'none'} -> {'none' if fault == 'clear' else fault}")
            return
        try:
            backend.clear_fault(node) if fault == "clear" else backend.inject_fault(node, fault)
        except BackendRejected as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{node}: {'fault cleared' if fault == 'clear' else fault}")
