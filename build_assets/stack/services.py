"""The local stack's services as `state.json` records them, and the environment that points
Docker, the builders and boto3 at them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from build_assets.settings import ENV_BACKEND, ENV_REGISTRY

# "registry" is the address builders push to: the ECR proxy (`stack.ecr_registry`) in front of
# the CNCF registry ("distribution") and moto's ECR API; it keeps the registry's old port.
SERVICES = ("docker", "distribution", "moto", "registry", "codebuild")


@dataclass
class Service:
    """One service of the stack as recorded in state.json (plus liveness when reported)."""

    name: str
    address: str  # "unix:///...sock", "127.0.0.1:5000", "http://127.0.0.1:5001"
    pid: int | None = None  # None when reused (not ours)
    owned: bool = True  # started by `up`, so `down` stops it
    start_time: int | None = None  # /proc start time, guards against PID reuse
    port: int | None = None
    log: str | None = None
    alive: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> Service:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass
class StackInfo:
    """The stack's services and the environment that points tools at them."""

    home: Path
    services: dict[str, Service] = field(default_factory=dict)

    @property
    def docker_host(self) -> str:
        return self.services["docker"].address

    @property
    def registry(self) -> str:
        return self.services["registry"].address

    @property
    def aws_endpoint_url(self) -> str:
        return self.services["moto"].address

    @property
    def ecr_endpoint_url(self) -> str:
        """The ECR API as the registry sees it (the proxy forwards it to moto)."""
        return f"http://{self.registry}"

    @property
    def codebuild_endpoint_url(self) -> str | None:
        svc = self.services.get("codebuild")
        return svc.address if svc else None

    @property
    def all_alive(self) -> bool:
        return all(s in self.services and self.services[s].alive for s in SERVICES)

    def env(self) -> dict[str, str]:
        """Environment variables that point Docker, the builders and boto3 at this stack."""
        return {
            "DOCKER_HOST": self.docker_host,
            ENV_REGISTRY: self.registry,
            "AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "AWS_ENDPOINT_URL_ECR": self.ecr_endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            ENV_BACKEND: "local",
            # boto3's per-service endpoint: CodeBuild calls go to the local CodeBuild
            **({"AWS_ENDPOINT_URL_CODEBUILD": cb} if (cb := self.codebuild_endpoint_url) else {}),
        }

    def to_json(self) -> dict:
        return {
            "home": str(self.home),
            "services": [asdict(s) for s in self.services.values()],
            "env": self.env() if self.all_alive else {},
        }
