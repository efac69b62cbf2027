"""Shards of a torchrun job: every input on exactly one rank, strided; throughput per rank and in total."""

from __future__ import annotations

from emorec.shards import Shard, gather, throughput_lines, torchrun_world_size


def test_every_input_goes_to_exactly_one_rank_strided():
    for count, world in [(10, 3), (7, 2), (2, 4), (0, 2), (5, 1)]:
        shards = [list(Shard(rank, world).positions(count)) for rank in range(world)]
        assert sorted(sum(shards, [])) == list(range(count))
        assert all(b - a == world for shard in shards for a, b in zip(shard, shard[1:]))


def test_one_process_is_one_shard_and_needs_no_process_group():
    assert torchrun_world_size({}) is None and torchrun_world_size({"WORLD_SIZE": "8"}) == 8
    assert gather({"images": 3}) == [{"images": 3}]


def test_the_total_rate_is_every_image_over_the_slowest_rank():
    lines = throughput_lines([(100, 10.0), (50, 20.0)])
    assert [line.split()[0] for line in lines] == ["rank", "0", "1", "total"]
    assert lines[1].split()[1:] == ["100", "10.0", "10.0"]
    assert lines[-1].split()[1:] == ["150", "20.0", "7.5"]
    assert len({len(line) for line in lines}) == 1, "aligned"
