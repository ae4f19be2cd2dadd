"""`cartflow up --fidelity aws`: the production topology on this machine.

The generated CloudFormation template, with both images built from this checkout and
pinned by digest, deployed into a MiniStack that runs containers (Docker-backed Lambda
under the RIE, ECS tasks, Scheduler, the SQS and Streams mappings). Batches then move on
the emulator's machinery only: no cartflow runner process takes part (docs/deploy.md).

The stack is recorded like the embedded one (``<state_dir>/stacks/<port>/stack.json``,
``fidelity: aws``), so `cartflow down`, `logs`, `wait` and the other commands find it.
Its processes: the emulator, a throwaway registry on 127.0.0.1 (unless ``registry`` names
one), and the supervisor, which touches ``deployment.alive`` once the template is deployed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from cartflow.core.config import Settings
from cartflow.local.emulator import EmulatorProcess, docker_reachable, remove_containers, start_emulator
from cartflow.local.liveness import process_token
from cartflow.local.registry import RegistryProcess, start_registry
from cartflow.local.stack import DEPLOYMENT, StackError, StackRecord, choose_port, free_stack_dir

LOCAL_STACK_NAME = "cartflow-local"
REGISTRY = "registry"
# The Spark job's driver heap in a laptop-sized task (the template's default is Fargate's).
SPARK_DRIVER_MEMORY = "1g"
console = Console(stderr=True)


@dataclass
class DeployedStack:
    settings: Settings
    registry: str | None = None  # HOST[:PORT][/PREFIX] to push the images to; None: start one
    stack_name: str = LOCAL_STACK_NAME
    docker: str = "docker"
    emulator: EmulatorProcess | None = None
    registry_process: RegistryProcess | None = None
    record: StackRecord | None = None

    @property
    def log_dir(self) -> Path:
        return self.settings.state_dir / "logs"

    def start(self) -> DeployedStack:
        try:
            self._start()
        except BaseException:  # a failed start (or a stop signal during it) leaves nothing behind
            self.stop()
            raise
        return self

    def _start(self) -> None:
        docker_reachable(self.docker)  # functions and jobs run as containers: nothing works without it
        # Its own emulator always: one that runs no containers cannot host the deployed stack.
        self.settings = self.settings.model_copy(update={"aws_endpoint_url": None})
        port, _ = choose_port(self.settings)
        directory = free_stack_dir(self.settings, port)
        self.settings = self.settings.model_copy(update={"state_dir": directory, "emulator_port": port})
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.registry is None:
            self.registry_process = start_registry(directory / "registry", self.log_dir / f"{REGISTRY}.log")
        self.emulator = start_emulator(self.settings, port=port, log_dir=self.log_dir, containers=True, docker=self.docker)
        self.settings = self.settings.model_copy(update={"aws_endpoint_url": self.emulator.endpoint})
        pid = os.getpid()
        self.record = StackRecord(
            key=str(port),
            endpoint=self.emulator.endpoint,
            supervisor=pid,
            supervisor_token=process_token(pid),
            started_at=time.time(),
            dir=directory,
            emulator=(self.emulator.process.pid, process_token(self.emulator.process.pid)),
            fidelity="aws",
        )
        if self.registry_process is not None:
            reg = self.registry_process.process.pid
            self.record.components[REGISTRY] = (reg, process_token(reg))
        self.record.save()  # before the deploy: a crash from here on leaves the pids known
        self._deploy()
        self.check_alive()

    def _deploy(self) -> None:
        from cartflow.infra.ship import DeployError, DeployRequest, deploy

        if self.emulator is None:  # unreachable: started just before
            raise StackError("the deployed stack has no emulator")
        registry = self.registry
        if registry is None and self.registry_process is not None:
            registry = f"{self.registry_process.address}/cartflow"
        # The emulator takes any key; its dummy one is used when the shell has none.
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
        request = DeployRequest(
            stack=self.stack_name,
            region=self.settings.region,
            endpoint_url=self.emulator.endpoint,
            bucket=self.settings.bucket,
            registry=registry,
            parameters={"SparkDriverMemory": SPARK_DRIVER_MEMORY},
        )
        console.print(f"deploying stack {self.stack_name} into the emulator {self.emulator.endpoint} ...", highlight=False)
        try:
            deploy(request, self.settings)
        except DeployError as exc:
            raise StackError(f"the deploy into the emulator failed: {exc}") from exc

    def check_alive(self) -> None:
        """Raise StackError when a process of the stack has gone; else renew its liveness."""
        if self.emulator is not None and self.emulator.process.poll() is not None:
            raise StackError(f"the emulator exited with {self.emulator.process.returncode}; see {self.emulator.log_path}")
        if self.registry_process is not None:
            if self.registry_process.process.poll() is not None:
                raise StackError(f"the image registry exited; see {self.registry_process.log_path}")
            (self.settings.state_dir / f"{REGISTRY}.alive").touch()
        (self.settings.state_dir / f"{DEPLOYMENT}.alive").touch()

    def stop(self) -> None:
        if self.emulator is not None:
            self.emulator.stop()
            port = self.settings.emulator_port
            removed = remove_containers(port, self.docker)
            if removed:
                console.print(f"removed {removed} function and job container(s) of the emulator on port {port}")
        if self.registry_process is not None:
            self.registry_process.stop()
        if self.record is not None and self.record.supervisor == os.getpid():
            self.record.path.unlink(missing_ok=True)

    def __enter__(self) -> DeployedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
