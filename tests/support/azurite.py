"""A throwaway Azure Blob Storage emulator (Azurite, from npm) on localhost."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass

from tests.conftest import REPO
from tests.support.postgres_server import free_port

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key: public, documented, only valid against the emulator.
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BINARY = REPO / ".cache" / "npm" / "node_modules" / ".bin" / "azurite-blob"


@dataclass
class Azurite:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_container(self, name: str) -> None:
        from azure.storage.blob import BlobServiceClient

        connection = (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint={self.endpoint}/{ACCOUNT};"
        )
        BlobServiceClient.from_connection_string(connection).create_container(name)

    def env(self) -> dict[str, str]:
        """Azure's standard variables, pointed at the emulator."""
        return {
            "AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": KEY,
            "AZURE_STORAGE_USE_EMULATOR": "true",
            "AZURITE_BLOB_STORAGE_URL": self.endpoint,
        }

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def start() -> Azurite:
    """Start Azurite's blob service; raises RuntimeError if it is not installed or fails."""
    if not BINARY.exists():
        raise RuntimeError("Azurite is not installed: run scripts/install-test-tools")
    port = free_port()
    process = subprocess.Popen(
        [
            str(BINARY),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return Azurite(process, port)
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("Azurite did not start") from None
            time.sleep(0.1)
