"""The bench scripts still run and measure something sane (tiny runs; the figures are in
docs/benchmarks.md, produced by the full runs)."""

from __future__ import annotations

import pytest

from bench import codec, concurrency, memory, realistic, turn_overhead
from bench.common import Histogram, bench_settings, percentile
from bench.server import ServerProcess


@pytest.fixture(scope="module")
def server():
    with ServerProcess(bench_settings(), extra_env={"ZYLIN_BENCH_SAMPLE_EVERY": "1"}) as srv:
        yield srv  # every stream timed: these runs have only a handful


def test_percentiles_and_histograms_agree_on_simple_numbers():
    values = [float(v) for v in range(1, 101)]
    h = Histogram()
    for v in values:
        h.add(v)
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0
    assert h.percentile(50) == pytest.approx(50.0, abs=0.11)
    assert h.as_dict()["max"] == 100.0


def test_the_codec_runs_faster_than_real_time_and_reports_resampler_delay():
    results = codec.run(seconds=0.5, min_cpu=0.02)
    assert all(row["x_real_time"] > 1.0 for row in results["throughput"])
    by_quality = {row["quality"]: row for row in results["delay"]}
    assert by_quality["HQ"]["first_out_ms"] > by_quality["QQ"]["first_out_ms"]
    assert by_quality["HQ"]["db_5000"] < -40      # filters what would alias into the phone band
    assert "|" in codec.render(results)


async def test_a_call_through_the_bench_server_has_a_non_negative_overhead_and_a_greeting(server):
    results = await turn_overhead.run([1], window_s=1.5, solo_speed=8.0, lines=1, warm_s=0.3,
                                      server=server, warm_up=False, progress=False)
    row = results["rows"][0]
    assert row["turns"] >= 1
    assert row["overhead_p50"] > -1.0            # rounding of the parts to 0.1 ms aside
    assert row["greetings"] >= 1 and 0 <= row["greeting_p99"] < 1000
    assert "overhead" in turn_overhead.render(results)


async def test_a_concurrency_step_measures_lag_cpu_and_continuity(server):
    results = await concurrency.run([3], window_s=1.0, warm_s=0.3, keep_going=True, loop="auto",
                                    recorder="default", settings=bench_settings(), server=server,
                                    warm_up=False, progress=False)
    step = results["steps"][0]
    assert step["failed"] == 0 and step["fps"] > 0
    assert step["lag_p99"] is not None and step["lag_p99"] >= 0
    assert step["gaps"] == 0 and step["gen_lag_p99"] is not None
    assert step["cpu"] > 0 and step["rss"] > 10


async def test_memory_counts_held_calls_and_finds_none_left_after_hang_up(server):
    held = await memory.hold(2, window_s=0.5, warm_s=0.3, settings=bench_settings(), server=server,
                             warm_up=False)
    assert held["sessions_held"] == 2 and held["sessions_after"] == 0
    seq = await memory.sequential(4, parallel=2, speed=20.0, checkpoints=2, trace=False,
                                  settings=bench_settings(), progress=False, server=server, warm_up=False)
    assert seq["failed"] == 0 and seq["per_call_alive_at_end"] == 0
    assert [row["calls"] for row in seq["rows"]] == [0, 2, 4]


async def test_realistic_delays_show_up_in_the_parts_of_a_turn():
    with ServerProcess(realistic.realistic_settings()) as srv:
        results = await realistic.run(2, window_s=2.0, lines=1, warm_s=0.3, server=srv, warm_up=False,
                                      speed=8.0)
    parts = {row["part"]: row for row in results["rows"]}
    assert parts["llm_ttft"]["n"] >= 1
    assert parts["llm_ttft"]["p50"] >= 370 and parts["tts_ttfb"]["p50"] >= 95
    assert parts["overhead"]["p50"] > -1.0


def test_the_vad_batch_bench_finds_the_same_events_batched_and_the_model_cheaper_per_window_in_batches():
    from bench import vad_batch

    costs = vad_batch.model_cost(rounds=1, reps=5)
    assert [row["batch"] for row in costs] == vad_batch.SIZES and all(row["us_per_window"] > 0 for row in costs)
    lines = vad_batch.call_lines(4, 2.0, None)
    alone, batched = vad_batch.feed(lines, False, 8), vad_batch.feed(lines, True, 8)
    late = vad_batch.lateness(alone["events"], batched["events"])   # raises if the events differ
    assert late["events"] > 0 and set(late["frames_late"]) <= {0, 1}
    assert batched["windows_per_run"] > 1


async def test_the_voice_benchmark_measures_each_voice_with_its_network_and_synthesis_time():
    import argparse

    from bench import voices

    args = argparse.Namespace(sentences=2, one_way_ms=10.0, handshake_rtts=2, aura_ttfb_ms=60.0,
                              realtime_ttfb_ms=120.0, faster_than_real_time=8.0)
    rows = {row["voice"]: row for row in await voices.run(args)}

    assert set(rows) == {"Aura REST, warm connection", "Aura REST, new connection",
                         "Aura streaming (socket per call)", "phrase cache hit", "OpenAI Realtime (session per call)"}
    # each voice waits at least its synthesis time plus a round trip; a new connection two more
    assert rows["Aura streaming (socket per call)"]["first_audio_p50"] >= 60 + 20
    assert rows["Aura REST, new connection"]["ttfb_p50"] >= rows["Aura REST, warm connection"]["ttfb_p50"] + 30
    assert rows["OpenAI Realtime (session per call)"]["first_audio_p50"] >= 120 + 20
    assert rows["phrase cache hit"]["first_audio_p50"] < 20


def test_the_turn_end_benchmark_runs_and_holds_a_line_paused_on_um(capsys):
    from bench import turn_ends
    from bench.turn_corpus import espeak_available

    if not espeak_available():
        pytest.skip("espeak-ng is not installed (CI installs it)")
    assert turn_ends.main(["--quick", "--vad", "energy"]) == 0
    out = capsys.readouterr().out
    assert "premature, pause <= 1 s" in out
