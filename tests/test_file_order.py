"""The numbering of `--watch` after files are read in parallel: back in file order, a gap-free
seq per connection, nothing numbered twice, and no connection waiting for a file it is not in."""
from anycost.bodies.file_order import FileOrder, Numbered


def _release(order, files):
    """files: (file number, connections) pairs."""
    return order.release(files, number_of=lambda f: f[0], connections_of=lambda f: f[1])


def test_files_arriving_out_of_order_wait_for_the_earlier_ones():
    first, second, third = (0, ("a",)), (1, ("a", "b")), (2, ("b",))
    order, ready, waiting = _release(FileOrder(), [third, second])
    assert (order, ready, sorted(waiting)) == (FileOrder(), [], [second, third])
    order, ready, waiting = _release(order, [first] + waiting)
    assert ready == [Numbered("a", 0, first), Numbered("a", 1, second), Numbered("b", 0, second),
                     Numbered("b", 1, third)]
    assert waiting == [] and order == FileOrder(3, (("a", 2), ("b", 2)))


def test_a_file_without_rows_for_a_connection_takes_none_of_its_numbers():
    order, ready, _ = _release(FileOrder(), [(0, ("a",)), (1, ()), (2, ("b",)), (3, ("b",))])
    assert [(n.connection_id, n.seq) for n in ready] == [("a", 0), ("b", 0), ("b", 1)]
    assert order.next_file == 4


def test_a_file_number_seen_again_gives_nothing():
    order, ready, _ = _release(FileOrder(), [(0, ("a",))])
    again, replayed, waiting = _release(order, [(0, ("a",)), (0, ("a",))])
    assert (again, replayed, waiting) == (order, [], [])
    _, twice, _ = _release(FileOrder(), [(0, ("a",)), (0, ("a",))])
    assert twice == [Numbered("a", 0, (0, ("a",)))]
