"""swapcoord.Session: the C++ SwapSession over an mpi4py communicator.

    from mpi4py import MPI
    import swapcoord, torch
    tensors = {"w": torch.randn(1 << 20), "m": torch.zeros(1 << 20)}
    with swapcoord.Session.create(MPI.COMM_WORLD, tensors, roots=["/nvme0"],
                                  catalog_dir="/shared/ckpt", policy="sharded") as s:
        s.swap_out(["w", "m"], [piece_w, piece_m])   # this rank's pieces
        s.commit({"step": 10})
        ...
        s.swap_in("w", piece_w)

Tensors are named; every call that takes names also takes one name, a tensor index, or the
name of a group given at creation (groups={"layer0": ["w", "m"]}). The tensor passed for
a name is this rank's piece of it: local_piece(name) gives its (element_offset, numel) in
the whole tensor, None when this rank owns none (balanced / round-robin policies: whole
tensors; sharded: one shard per rank). Pieces are contiguous CPU tensors of the tensor's
dtype and the piece's numel.

Collective calls (create, resume, commit, verify, end_phase, remove_files) must be made
by every rank in the same order. A session must be closed before MPI is finalised: close()
or `with`; sessions still open at interpreter exit are closed then (Python's atexit runs
before mpi4py finalises MPI).
"""
import atexit
import json
import os
import sys
import weakref

from . import _swapcoord
from ._tensors import device_index, dtype_name, tensor_memory

# The keys of the options' two sections (README, "Configuration"); keyword arguments of
# create() / resume() go to the section that has them.
_SWAP_KEYS = {"roots", "catalog_dir", "create_roots", "overwrite", "job", "layout", "policy", "shard_threshold", "alignment", "slots",
              "buffer_count", "buffer_size", "prefetch_bytes", "pin_memory", "verify", "checksum", "prepare",
              "phase_timeout_s", "node_key"}
_AIO_KEYS = {"block_size", "queue_depth", "intra_op_parallelism", "thread_count", "single_submit", "overlap_events",
             "use_gds", "direct", "fsync", "backend", "register"}

_open_sessions = weakref.WeakSet()


@atexit.register
def _close_open_sessions():
    for session in list(_open_sessions):
        try:
            session.close()
        except Exception as error:  # noqa: BLE001 (at exit: say it, close the others)
            print(f"swapcoord: closing a session at exit: {error}", file=sys.stderr)


def _config_documents(config, options):
    """The JSON documents (text, source) the C++ apply_config reads, in order."""
    documents = []
    if config is not None:
        if isinstance(config, (str, os.PathLike)):
            path = os.fspath(config)
            try:
                with open(path, encoding="utf-8") as f:
                    documents.append((f.read(), f"config '{path}'"))
            except OSError as e:
                raise _swapcoord.ConfigError(f"config '{path}': cannot be read: {e.strerror}") from None
        elif isinstance(config, dict):
            documents.append((json.dumps(config), "config (a dict)"))
        else:
            raise _swapcoord.ConfigError(f"config: expected a dict or a JSON file's path, got {type(config).__name__}")
    overrides = {"swap": {}, "aio": {}}
    for key, value in options.items():
        if key in _SWAP_KEYS:
            section = "swap"
        elif key in _AIO_KEYS:
            section = "aio"
        else:
            raise _swapcoord.ConfigError(
                f"Session option '{key}' is not known; swap options: {', '.join(sorted(_SWAP_KEYS))}; "
                f"aio options: {', '.join(sorted(_AIO_KEYS))}")
        if key == "roots":
            value = [os.fspath(value)] if isinstance(value, (str, os.PathLike)) else [os.fspath(r) for r in value]
        elif key == "catalog_dir":
            value = os.fspath(value)
        overrides[section][key] = value
    documents.append((json.dumps({k: v for k, v in overrides.items() if v}), "Session options"))
    return documents


def _specs(tensors):
    """(name, shape, dtype name) for each tensor: from a dict of name -> torch.Tensor (the
    whole tensor) or a list of (name, shape, dtype) triples."""
    if isinstance(tensors, dict):
        return [(str(name), [int(d) for d in t.shape], dtype_name(t.dtype)) for name, t in tensors.items()]
    specs = []
    for i, entry in enumerate(tensors):
        try:
            name, shape, dtype = entry
        except (TypeError, ValueError):
            raise _swapcoord.ConfigError(f"tensors[{i}]: expected (name, shape, dtype), got {entry!r}") from None
        shape = [int(shape)] if isinstance(shape, int) else [int(d) for d in shape]
        specs.append((str(name), shape, dtype_name(dtype)))
    return specs


class Handle:
    """A swap or prefetch in flight: wait() returns its figures (a dict: pieces, bytes,
    seconds, prefetched_bytes) or raises its error; ready() tells without waiting. The
    tensors it reads or writes are kept alive until it is waited for."""

    def __init__(self, handle, tensors):
        self._handle = handle
        self._tensors = tensors

    def wait(self):
        try:
            return self._handle.wait()
        finally:
            self._tensors = None

    def ready(self):
        return self._handle.ready()


class Session:
    """See the module's documentation. Make one with Session.create or Session.resume."""

    def __init__(self, *args, **kwargs):
        raise TypeError("use swapcoord.Session.create(...) or swapcoord.Session.resume(...)")

    @classmethod
    def create(cls, comm, tensors, config=None, groups=None, **options):
        """Collective over `comm` (an mpi4py communicator): plans where every piece lives,
        agrees on it with every rank, creates the swap files. `config`: a dict or a JSON
        file in swapcoord's form ({"swap": ..., "aio": ...}) or DeepSpeed's ds_config;
        keyword options (roots, catalog_dir, job, policy, slots, overwrite, block_size,
        ...) override it. Refuses to replace a committed catalog unless overwrite=True."""
        return cls._open(comm, tensors, config, groups, options, resume=False)

    @classmethod
    def resume(cls, comm, tensors, config=None, groups=None, **options):
        """Collective: as create, then continues from the last committed catalog (also at
        another rank count: pieces are re-partitioned). `metadata` is then what the last
        commit recorded."""
        return cls._open(comm, tensors, config, groups, options, resume=True)

    @classmethod
    def _open(cls, comm, tensors, config, groups, options, resume, problem=""):
        from mpi4py import MPI as _MPI  # here, so that `import swapcoord` alone does not start MPI
        self = object.__new__(cls)
        # What can go wrong on this rank alone (a bad tensor list, an unreadable config) is
        # handed to the collective call, which raises it on every rank: raising it here
        # would leave the other ranks waiting in create() for this one.
        specs, documents = [], []
        try:
            if problem:  # the caller's (OptimizerSwapper's) own checks failed
                raise _swapcoord.ConfigError(problem)
            specs = _specs(tensors)
            self._names = [name for name, _, _ in specs]
            self._dtypes = [dtype for _, _, dtype in specs]
            self._ids = {name: i for i, name in enumerate(self._names)}
            if len(self._ids) != len(self._names):
                seen = set()
                duplicate = next(n for n in self._names if n in seen or seen.add(n))
                raise _swapcoord.ConfigError(f"tensors: the name '{duplicate}' is given twice")
            self._groups = {}
            for group, members in (groups or {}).items():
                self._groups[str(group)] = [self._id(m) for m in members]
            documents = _config_documents(config, options)
        except (ValueError, TypeError, OSError, _swapcoord.Error) as error:
            problem = str(error) or type(error).__name__
            specs, documents = [], []
        self._session = _swapcoord.Session(_MPI._addressof(comm), specs, documents, resume, problem)
        _open_sessions.add(self)
        return self

    # -- names ----------------------------------------------------------------------------
    @property
    def names(self):
        return list(self._names)

    def _id(self, name):
        if isinstance(name, int):
            if not 0 <= name < len(self._names):
                raise _swapcoord.ConfigError(f"tensor index {name} is out of range (0..{len(self._names) - 1})")
            return name
        try:
            return self._ids[name]
        except KeyError:
            raise _swapcoord.ConfigError(f"no tensor named '{name}' in this session") from None

    def _ids_of(self, names):
        if isinstance(names, (str, int)):
            if isinstance(names, str) and names in self._groups and names not in self._ids:
                return list(self._groups[names])
            return [self._id(names)]
        ids = []
        for name in names:
            ids.extend(self._ids_of(name))
        return ids

    def _views(self, ids, tensors, what):
        if not isinstance(tensors, (list, tuple)):
            tensors = [tensors]
        if len(tensors) != len(ids):
            raise _swapcoord.ConfigError(f"{what}: {len(ids)} tensors named, {len(tensors)} given")
        views = []
        for i, t in zip(ids, tensors):
            piece = self._session.local_piece(i)
            name = self._names[i]
            if piece is None:
                raise _swapcoord.ConfigError(f"{what}: rank {self.rank} owns no piece of tensor '{name}'")
            address, nbytes, dtype = tensor_memory(t, f"{what} of tensor '{name}'", allow_cuda=True)
            if dtype != self._dtypes[i] or t.numel() != piece[4]:
                raise _swapcoord.ConfigError(
                    f"{what} of tensor '{name}': rank {self.rank}'s piece is {piece[4]} elements of "
                    f"{self._dtypes[i]}, the tensor given has {t.numel()} of {dtype}")
            views.append((address, t.numel(), dtype, device_index(t)))
        # detach(): another tensor object on the same storage, so that the memory stays
        # alive even if the caller re-points the tensor (t.data = ..., t.set_()).
        return views, [t.detach() for t in tensors]

    # -- swapping -------------------------------------------------------------------------
    def swap_out(self, names, tensors):
        """Writes this rank's pieces of `names` from `tensors`; returns the figures."""
        ids = self._ids_of(names)
        views, _ = self._views(ids, tensors, "swap_out")
        return self._session.swap_out(ids, views)

    def swap_in(self, names, tensors):
        """Reads this rank's pieces of `names` into `tensors`; returns the figures."""
        ids = self._ids_of(names)
        views, _ = self._views(ids, tensors, "swap_in")
        return self._session.swap_in(ids, views)

    def swap_out_async(self, names, tensors):
        ids = self._ids_of(names)
        views, keep = self._views(ids, tensors, "swap_out")
        return Handle(self._session.swap_out_async(ids, views), keep)

    def swap_in_async(self, names, tensors):
        ids = self._ids_of(names)
        views, keep = self._views(ids, tensors, "swap_in")
        return Handle(self._session.swap_in_async(ids, views), keep)

    def prefetch(self, names):
        """Starts reading the pieces into the session's pinned memory; a later swap_in of
        them only copies."""
        return Handle(self._session.prefetch(self._ids_of(names)), None)

    def wait_all(self):
        self._session.wait_all()

    # -- collective -----------------------------------------------------------------------
    def commit(self, metadata=None):
        """Collective: everything swapped out so far becomes durable and is recorded in the
        catalog with `metadata` (any JSON-serialisable value, stored as JSON, at most
        32 KiB; rank 0's is kept and given back as `metadata` by resume). Returns the new
        epoch."""
        try:
            text = "" if metadata is None else json.dumps(metadata, sort_keys=True)
        except (TypeError, ValueError) as error:
            if self.rank == 0:  # the others time out in the commit, naming rank 0
                raise _swapcoord.ConfigError(f"commit: the metadata is not JSON-serialisable: {error}") from None
            text = ""  # only rank 0's is kept
        return self._session.commit(text)

    def verify(self):
        """Collective: reads every committed piece and checks its checksum against the
        catalog's. A dict: pieces, bytes, mismatches, notes."""
        return self._session.verify()

    def end_phase(self, phase, epoch, bytes=0, seconds=0.0, wrong=0, failure=""):
        """Collective barrier with figures (min/mean/max over ranks), as `swapcoord run`
        prints per phase; a failure on any rank raises PhaseError on every rank."""
        return self._session.end_phase(str(phase), int(epoch), int(bytes), float(seconds), int(wrong), str(failure))

    def remove_files(self):
        """Collective: removes this job's swap files, catalog and empty directories."""
        self._session.remove_files()

    # -- what the session knows -----------------------------------------------------------
    def local_piece(self, name):
        """(element_offset, numel) of this rank's piece of tensor `name`, or None."""
        piece = self._session.local_piece(self._id(name))
        return None if piece is None else (piece[3], piece[4])

    def pieces(self, name=None):
        """Every piece of the plan (or of tensor `name`) as (name, rank, element_offset,
        numel, node), in plan order."""
        wanted = None if name is None else self._id(name)
        return [(self._names[t], owner, offset, numel, node)
                for t, _shard, owner, offset, numel, node in self._session.pieces()
                if wanted is None or t == wanted]

    def where(self, name):
        """(path, offset, bytes) of the copy a swap_in of `name` would read."""
        return self._session.where(self._id(name))

    @property
    def metadata(self):
        """What the commit this session resumed from recorded (decoded from JSON when it is
        JSON), or None for a session made by create()."""
        text = self._session.resumed_metadata
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:  # written by another program than this package
            return text

    rank = property(lambda self: self._session.rank)
    world_size = property(lambda self: self._session.world_size)
    node = property(lambda self: self._session.node)
    node_count = property(lambda self: self._session.node_count)
    host = property(lambda self: self._session.host)
    committed_epoch = property(lambda self: self._session.committed_epoch)
    resumed_epoch = property(lambda self: self._session.resumed_epoch)
    repartitioned = property(lambda self: self._session.repartitioned)
    catalog_path = property(lambda self: self._session.catalog_path)
    options = property(lambda self: json.loads(self._session.options_json))

    def statistics(self):
        """This rank's cumulative figures: swap_out, swap_in, prefetch, commit, each a dict
        of calls, bytes, seconds."""
        return self._session.statistics()

    def local_files(self):
        return self._session.local_files()

    # -- lifetime -------------------------------------------------------------------------
    def close(self):
        """Waits for work in flight and ends the session (not collective). Raises the
        error of an async call whose handle was dropped without wait(), after closing."""
        if self._session.closed:
            return
        try:
            self._session.wait_all()
        finally:
            self._session.close()
            _open_sessions.discard(self)

    @property
    def closed(self):
        return self._session.closed

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # an exception is on its way: it is the one to see
            try:
                self.close()
            except Exception:  # noqa: BLE001
                pass
        return False
