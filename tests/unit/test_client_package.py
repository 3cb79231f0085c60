"""The `client` package's public names, and that the codec stays importable without trio."""

from __future__ import annotations

import subprocess
import sys

from tidelog import client


def test_every_exported_name_resolves() -> None:
    for name in client.__all__:
        assert getattr(client, name) is not None, name
    assert client.Producer.__module__ == "tidelog.client.producer"
    assert issubclass(client.TopicAlreadyExistsError, client.BrokerResponseError)
    assert issubclass(client.BrokerResponseError, client.KafkaError)


def test_importing_the_codec_does_not_load_trio_or_the_client() -> None:
    code = (
        "import sys, tidelog.client.protocol.records, tidelog.client.protocol.apis; "
        "print(sorted(m for m in sys.modules"
        " if m == 'trio' or m.startswith('tidelog.client.producer')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
