"""Files read in parallel, put back in the order they were found: the numbering of `--watch`.

`--watch` numbers each new file as it finds it (0, 1, 2, ...), reads the files in parallel,
and then needs them in that order again: each connection's sender follows a gap-free
sequence of its own, and a connection's next number is known only once every earlier file
has been read, because only reading says which connections a file has rows for. So every
read file comes here, one with no rows for a connection too (it takes no number of that
connection, so that connection's sender never waits for it), and one with no rows at all
(it only fills its place). A file that arrives before an earlier one waits; a file number
seen again (a replayed delivery) gives nothing. No Beam, no I/O.
"""
from typing import Iterable, List, NamedTuple, Tuple


class Numbered(NamedTuple):
    """One file's place for one connection: the connection's next gap-free number."""
    connection_id: str
    seq: int
    file: object  # whatever the caller numbered: here, the read file


class FileOrder(NamedTuple):
    """The state between two arrivals: the next file number due, each connection's next seq."""
    next_file: int = 0
    following: Tuple[Tuple[str, int], ...] = ()  # (connection, next seq), sorted

    def release(self, arrived: Iterable, number_of, connections_of) -> Tuple["FileOrder", List[Numbered], list]:
        """Files that arrived (early ones held back before, and new ones) -> the next state, each
        connection's numbered files in file order, and the files that must still wait."""
        expected, following = self.next_file, dict(self.following)
        ready, waiting = [], []
        for file in sorted(arrived, key=number_of):
            number = number_of(file)
            if number < expected:
                continue  # numbered already: a replayed or duplicate delivery
            if number > expected:
                waiting.append(file)  # an earlier file is still being read
                continue
            for connection_id in sorted(connections_of(file)):
                seq = following.get(connection_id, 0)
                following[connection_id] = seq + 1
                ready.append(Numbered(connection_id, seq, file))
            expected += 1
        return FileOrder(expected, tuple(sorted(following.items()))), ready, waiting
