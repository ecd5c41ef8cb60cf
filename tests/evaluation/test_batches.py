"""Attack batches are consecutive groups of the selection, whole on one DDP rank."""

from mlattack.evaluation.batches import group_share


def test_groups_stay_whole_and_cover_every_position_once() -> None:
    shares = [group_share(23, 10, rank, 2) for rank in range(2)]
    assert shares[0] == [*range(0, 10), *range(20, 23)]
    assert shares[1] == list(range(10, 20))
    three = [group_share(23, 4, rank, 3) for rank in range(3)]
    assert sorted(p for s in three for p in s) == list(range(23))
    for share in three:  # every batch of 4 a rank draws is one group of consecutive positions
        for i in range(0, len(share), 4):
            chunk = share[i : i + 4]
            assert chunk == list(range(chunk[0], chunk[0] + len(chunk))) and chunk[0] % 4 == 0


def test_one_process_gets_the_selection_in_order() -> None:
    assert group_share(7, 10, 0, 1) == list(range(7))
