"""A file sink leaves alone the batches another owner finishes (issue 20, "Three finishers":
in compose the file sink wrote the gateway's batches a third time).

The gateway and `run` publish a signed manifest naming themselves as `finisher`; the file
sink then finishes that batch's results, pieces, downloads and dead letters unwritten, and
keeps no ledger or files for it, also for results that came before the manifest and across
a restart. An unsigned claim (the topic is open) is not honoured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gpt4batch.common.authenticator import Authenticator
from gpt4batch.common.errors import Requeue
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import BatchManifest, DeadLetter, Finishers
from gpt4batch.services.sink.elsewhere import FILE_NAME, FinishedElsewhere
from gpt4batch.services.sink.ledger import BatchLedger
from gpt4batch.services.sink.sink import Sink
from tests.sink.helpers import DELIVERY, download, make_sink, manifest, result, run


@dataclass
class Signed:
    """A delivery carrying the bytes as received (signed or not)."""

    body: bytes
    id: str = "0000000000000002"
    attempts: int = 1

    def touch(self) -> None:
        pass


def claim(batch: str, *, finisher: str = Finishers.GATEWAY) -> BatchManifest:
    return BatchManifest(batch=batch, total=2, finisher=finisher)


def signed(bus: MemoryBus, msg: BatchManifest, key: Authenticator | None = None) -> Signed:
    body = msg.model_dump_json().encode()
    return Signed((key or bus.authenticator).sign(bus.topics.batches, body))


def dropped(kind: str) -> float:
    value = REGISTRY.get_sample_value("gpt4batch_sink_not_ours_dropped_total", {"kind": kind})
    return value or 0.0


def unsigned_claims() -> float:
    return REGISTRY.get_sample_value("gpt4batch_sink_unsigned_finisher_claims_total") or 0.0


def files_of(folder: Path, batch: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(batch))


def letter(bus: MemoryBus, batch: str, seq: int) -> DeadLetter:
    body = result("x", batch=batch, seq=seq).model_dump_json()
    return DeadLetter(
        topic=bus.topics.results, channel="sink", service="caller", id="1", attempts=10,
        reason="gave up", at=time.time(), body=body,
    )  # fmt: skip


def test_a_signed_claim_hands_the_batch_over_with_what_came_before_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink, bus = make_sink(out_dir=tmp_path)
        await sink.start()
        # A result before the manifest: held as a batch without a manifest, files and all.
        await sink.handle_result(result("r0", batch="gw", seq=0), DELIVERY)
        assert files_of(tmp_path, "gw") and len(sink.pool.loaded()) == 1
        before = {k: dropped(k) for k in ("result", "download", "dead", "manifest")}

        await sink.handle_manifest(claim("gw"), signed(bus, claim("gw")))
        assert files_of(tmp_path, "gw") == [] and sink.pool.loaded() == []
        # Everything of it from now on is finished unwritten, and counted.
        await sink.handle_results([(result("r1", batch="gw", seq=1), DELIVERY)])
        await sink.handle_result(result("r1", batch="gw", seq=1), DELIVERY)
        await sink.handle_download(download("a.png", batch="gw"), DELIVERY)
        await sink.handle_dead(letter(bus, "gw", 1), DELIVERY)
        await sink.handle_manifest(manifest(2, batch="gw"), DELIVERY)  # a default one, late
        assert files_of(tmp_path, "gw") == [] and sink.pool.loaded() == []
        assert dropped("result") - before["result"] == 2
        assert dropped("download") - before["download"] == 1
        assert dropped("dead") - before["dead"] == 1
        assert dropped("manifest") - before["manifest"] == 1
        # Another batch on the same bus is still the file sink's.
        await sink.handle_manifest(manifest(1, batch="own"), DELIVERY)
        await sink.handle_result(result("o0", batch="own", seq=0), DELIVERY)
        assert (tmp_path / "own.done").exists() and (tmp_path / "own.jsonl").exists()
        await sink.close()

    run(scenario())


def test_a_restarted_file_sink_still_leaves_the_batch_alone(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink, bus = make_sink(out_dir=tmp_path)
        await sink.start()
        await sink.handle_manifest(
            claim("run-b", finisher=Finishers.RUN),
            signed(bus, claim("run-b", finisher=Finishers.RUN)),
        )
        await sink.close()

        again, _ = make_sink(out_dir=tmp_path)
        await again.start()
        await again.handle_result(result("r0", batch="run-b", seq=0), DELIVERY)
        assert files_of(tmp_path, "run-b") == [] and again.pool.loaded() == []
        await again.close()

    run(scenario())


def test_an_unsigned_or_wrongly_signed_claim_is_not_honoured(tmp_path: Path) -> None:
    """The `…batches` topic is open: a forged claim must not make the sink drop a batch."""

    async def scenario() -> None:
        sink, bus = make_sink(out_dir=tmp_path)
        await sink.start()
        before = unsigned_claims()
        forged = claim("victim")
        await sink.handle_manifest(forged, Signed(forged.model_dump_json().encode()))
        other_secret = Authenticator.generate()
        await sink.handle_manifest(forged, signed(bus, forged, other_secret))
        assert unsigned_claims() - before == 2
        await sink.handle_result(result("r0", batch="victim", seq=0), DELIVERY)
        await sink.handle_result(result("r1", batch="victim", seq=1), DELIVERY)
        assert (tmp_path / "victim.done").exists()
        assert not (tmp_path / FILE_NAME).exists()
        await sink.close()

    run(scenario())


def test_a_claim_waits_for_a_message_of_the_batch_being_written(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink, bus = make_sink(out_dir=tmp_path)
        await sink.start()
        msg = claim("gw")
        async with sink.pool.use("gw"):
            with pytest.raises(Requeue):
                await sink.handle_manifest(msg, signed(bus, msg))
        await sink.handle_manifest(msg, signed(bus, msg))  # its redelivery
        assert files_of(tmp_path, "gw") == [] and sink.pool.loaded() == []
        await sink.close()

    run(scenario())


def test_an_owners_own_sink_does_not_read_claims(tmp_path: Path) -> None:
    """The gateway's embedded sink gets its own signed manifest: it keeps the batch."""

    async def scenario() -> None:
        done: list[str] = []

        async def finisher(ledger: BatchLedger) -> None:
            done.append(ledger.batch)

        sink = Sink(out_dir=tmp_path, interval=0.01, on_complete=finisher)
        bus = MemoryBus(service="gateway", record=True)
        sink.bus = bus
        await sink.start()
        msg = BatchManifest(batch="gw", total=1, finisher=Finishers.GATEWAY)
        await sink.handle_manifest(msg, signed(bus, msg))
        await sink.handle_result(result("r0", batch="gw", seq=0), DELIVERY)
        assert done == ["gw"] and sink.elsewhere is None
        await sink.close()

    run(scenario())


def test_the_list_forgets_batches_past_its_keep_time(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / FILE_NAME
        kept = FinishedElsewhere(path)
        await kept.add("old", "gateway")
        await kept.add("old", "gateway")  # once only
        assert path.read_text().count("\n") == 1
        path.write_text(path.read_text() + '{"batch":"torn"')  # a line cut by a crash
        later = FinishedElsewhere(path, keep_seconds=-1)  # everything is past its time
        later.load()
        assert "old" not in later and path.read_text() == ""
        again = FinishedElsewhere(path)
        again.load()
        assert "old" not in again

    run(scenario())


def test_an_old_manifest_without_a_finisher_is_the_file_sinks() -> None:
    old = BatchManifest.model_validate_json(b'{"v":1,"batch":"b","total":3}')
    assert old.finisher == Finishers.FILE_SINK


def test_a_long_running_sink_forgets_old_batches_and_keeps_its_file_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        path = tmp_path / FILE_NAME
        kept = FinishedElsewhere(path, keep_seconds=3600)
        now = [1_000_000.0]
        monkeypatch.setattr("gpt4batch.services.sink.elsewhere.time.time", lambda: now[0])
        for i in range(150):
            await kept.add(f"old{i}", "gateway")
        now[0] += 7200  # they are all past their time now
        await kept.add("new", "gateway")
        assert "old0" not in kept and "new" in kept
        for i in range(100):
            await kept.add(f"new{i}", "gateway")
        lines = path.read_text().splitlines()
        assert len(lines) < 150 and not any('"old' in line for line in lines)

    run(scenario())
