"""Where jobs run: in this process (one thread per device, reads one job ahead) or on Dask.

* GPUs: one model copy per GPU, each fed by its own thread; the batch size is grown or shrunk
  to the GPU's free memory when ``batch_size="auto"``.
* CPU on Dask: the model is sent once to every worker (``scatter(broadcast=True)``), then one
  task per job; each worker runs torch with its own thread count, so the cluster's
  ``n_workers x threads_per_worker`` is the parallelism.
"""

from __future__ import annotations

import copy
import dataclasses
import queue
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from cropflow.errors import ConfigError
from cropflow.predict.engine import Job, Runner, run_job
from cropflow.predict.model import ModelBundle
from models.contract import InputContract

OnDone = Callable[[str], None]


def resolve_devices(device: str) -> list[torch.device]:
    """The devices to run on: every CUDA GPU for ``auto``/``cuda`` when present, else CPU."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    if device == "cuda":
        raise ConfigError(
            "device='cuda' was asked for but torch sees no CUDA GPU",
            hint="use device='auto' or 'cpu', or run on a machine with a GPU",
        )
    return [torch.device("cpu")]


def resolve_executor(executor: str, devices: Sequence[torch.device]) -> str:
    """``dask`` or ``local``: ``auto`` means local on GPUs, Dask on CPU."""
    if executor != "auto":
        return executor
    return "local" if devices[0].type == "cuda" else "dask"


def fit_batch_size(
    model: nn.Module,
    contract: InputContract,
    device: torch.device,
    sample_shape: tuple[int, ...],
    start: int,
    limit: int = 1 << 16,
    share: float = 0.4,
) -> int:
    """The batch size for ``device``: ``start`` on CPU; on a GPU, the largest power-of-two
    multiple of ``start`` whose forward pass fits (halving on out-of-memory), growing while
    the peak stays under ``share`` of the GPU's memory."""
    if device.type != "cuda":
        return start
    t = sample_shape[0]
    spatial = len(sample_shape) > 2

    def fits(b: int) -> bool:
        try:
            runner = Runner(model, contract, device, b)
            x = torch.zeros((b, *sample_shape)).numpy()
            dates = torch.arange(t).expand(b, t).numpy()
            pad = torch.zeros((b, t), dtype=torch.bool).numpy()
            fm = torch.ones((b, *sample_shape[2:]), dtype=torch.bool).numpy() if spatial else None
            runner.probs(x, dates, pad, fm if contract.input_kind == "field" else None)
            torch.cuda.synchronize(device)
            return True
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return False

    b = start
    while not fits(b):
        if b == 1:
            raise ConfigError(
                f"one sample of shape {sample_shape} does not fit in {device}'s memory",
                hint="use smaller patches or tiles, or run on CPU",
            )
        b //= 2
    total = torch.cuda.get_device_properties(device).total_memory
    while b * 2 <= limit:
        torch.cuda.reset_peak_memory_stats(device)
        if not fits(b * 2):
            break
        b *= 2
        if torch.cuda.max_memory_allocated(device) > share * total:
            break
    torch.cuda.empty_cache()
    return b


def _model_on(model: nn.Module, device: torch.device) -> nn.Module:
    """The model on ``device``: itself on CPU, a copy on a GPU (one copy per GPU)."""
    copy_ = model if device.type == "cpu" else copy.deepcopy(model).to(device)
    return copy_.eval()


def device_runners(
    bundle: ModelBundle,
    devices: Sequence[torch.device],
    batch_size: int,
    fit: bool,
    sample_shape: tuple[int, ...],
) -> list[Runner]:
    """One runner per device, each with its own model copy; with ``fit``, the batch size is
    fitted to each GPU's memory (starting at ``batch_size``)."""
    runners = []
    for device in devices:
        model = _model_on(bundle.model, device)
        b = (
            fit_batch_size(model, bundle.contract, device, sample_shape, batch_size)
            if fit
            else batch_size
        )
        runners.append(Runner(model, bundle.contract, device, b, bundle.tta))
    return runners


def run_local(jobs: Sequence[Job], runners: Sequence[Runner], on_done: OnDone) -> None:
    """Run jobs in this process: one thread per runner (device), each reading its next job
    ahead in a second thread and writing its last in a third, so that reading and writing
    overlap the model."""
    todo: queue.Queue[Job] = queue.Queue()
    for job in jobs:
        todo.put(job)
    errors: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()

    def take() -> Job | None:
        if stop.is_set():
            return None
        try:
            return todo.get_nowait()
        except queue.Empty:
            return None

    def commit(job: Job, result: Any) -> None:
        job.commit(result)
        with lock:
            on_done(job.name)

    def loop(runner: Runner) -> None:
        with (
            ThreadPoolExecutor(1, thread_name_prefix="cropflow-read") as reader,
            ThreadPoolExecutor(1, thread_name_prefix="cropflow-write") as writer,
        ):
            job = take()
            ahead = reader.submit(job.load, runner) if job else None
            written: Future[None] | None = None
            while job is not None and ahead is not None:
                data = ahead.result()
                following = take()
                ahead = reader.submit(following.load, runner) if following else None
                result = job.compute(data, runner)
                if written is not None:
                    written.result()  # one write in flight: memory stays one tile
                written = writer.submit(commit, job, result)
                job = following
            if written is not None:
                written.result()

    def guarded(runner: Runner) -> None:
        try:
            loop(runner)
        except BaseException as exc:
            stop.set()
            errors.append(exc)

    if len(runners) == 1:
        loop(runners[0])
        return
    threads = [
        threading.Thread(target=guarded, args=(r,), name=f"cropflow-{r.device}") for r in runners
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]


@dataclass(frozen=True)
class ModelPayload:
    """A model as sent to Dask workers: config, contract and weights (as
    :mod:`models.serialization` stores them), rebuilt once per worker. Torch modules do not
    all pickle (recurrent layers keep weak references); tensors and JSON always do."""

    token: str
    contract_json: str
    config_json: str | None
    state: dict[str, torch.Tensor] | None
    module: nn.Module | None = None  # a model that is not a CropflowModel, pickled as is
    forecaster: tuple[str, str, dict[str, torch.Tensor]] | None = None
    """In-season "forecast" maps: the forecaster's config, contract and weights."""
    tta: str = "none"
    """Test-time augmentation (the bundle's)."""
    members: tuple[ModelPayload, ...] = ()
    """An ensemble (PredictOptions.ensemble): its members, each as a payload."""

    @classmethod
    def of(cls, model: nn.Module, contract: InputContract) -> ModelPayload:
        from models.ensemble import ModelEnsemble
        from models.forecaster import CompletedSeasonModel

        if isinstance(model, ModelEnsemble):
            members = tuple(cls.of(m, getattr(m, "contract")) for m in model.members)  # noqa: B009
            return cls(uuid.uuid4().hex, contract.model_dump_json(), None, None, members=members)
        if isinstance(model, CompletedSeasonModel):
            inner = cls.of(model.classifier, model.classifier_contract)
            f = model.forecaster
            state = {k: v.detach().cpu() for k, v in f.state_dict().items()}
            forecaster = (f.config.model_dump_json(), f.contract.model_dump_json(), state)
            return dataclasses.replace(inner, forecaster=forecaster)
        config = getattr(model, "config", None)
        token = uuid.uuid4().hex
        if isinstance(config, BaseModel):
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            return cls(token, contract.model_dump_json(), config.model_dump_json(), state)
        return cls(token, contract.model_dump_json(), None, None, model)

    def build(self) -> tuple[nn.Module, InputContract]:
        """The model (eval mode) and its contract; built on first use in this process."""
        with _BUILT_LOCK:
            if self.token not in _BUILT:
                contract = InputContract.model_validate_json(self.contract_json)
                if self.members:
                    model = self._ensemble()
                elif self.module is not None:
                    model = self.module
                else:
                    from models.base import build_model
                    from models.configs import parse_model_config

                    model = build_model(parse_model_config(str(self.config_json)), contract)
                    model.load_state_dict(self.state or {})
                if self.forecaster is not None:
                    from models.configs import ForecasterConfig
                    from models.forecaster import CompletedSeasonModel, SeasonForecaster

                    config_json, contract_json, f_state = self.forecaster
                    f = SeasonForecaster(
                        ForecasterConfig.model_validate_json(config_json),
                        InputContract.model_validate_json(contract_json),
                    )
                    f.load_state_dict(f_state)
                    model = CompletedSeasonModel(model, f)
                    contract = model.contract
                while len(_BUILT) >= 2:  # keep the models of the last two predictions
                    _BUILT.pop(next(iter(_BUILT)))
                _BUILT[self.token] = (model.eval(), contract)
            return _BUILT[self.token]

    def _ensemble(self) -> nn.Module:
        """The ensemble of the members' models (built here, outside the cache)."""
        from models.base import CropflowModel, build_model
        from models.configs import parse_model_config
        from models.ensemble import ModelEnsemble

        members: list[CropflowModel] = []
        for p in self.members:
            member = build_model(
                parse_model_config(str(p.config_json)),
                InputContract.model_validate_json(p.contract_json),
            )
            member.load_state_dict(p.state or {})
            members.append(member)
        return ModelEnsemble(members)


_BUILT: dict[str, tuple[nn.Module, InputContract]] = {}
_BUILT_LOCK = threading.Lock()


def _on_worker(job: Job, payload: ModelPayload, batch_size: int) -> str:
    """A Dask task: run one job with the worker's copy of the model, on its CPU threads."""
    from distributed import get_worker

    model, contract = payload.build()
    torch.set_num_threads(max(1, int(get_worker().state.nthreads)))
    return run_job(job, Runner(model, contract, torch.device("cpu"), batch_size, payload.tta))


def run_dask(
    jobs: Sequence[Job], bundle: ModelBundle, client: Any, batch_size: int, on_done: OnDone
) -> None:
    """Run jobs as Dask tasks on ``client``'s cluster (the model is sent once per worker)."""
    from distributed import as_completed

    if not jobs:
        return
    token = uuid.uuid4().hex[:8]
    payload = dataclasses.replace(ModelPayload.of(bundle.model, bundle.contract), tta=bundle.tta)
    [sent] = client.scatter([payload], broadcast=True, hash=False)
    futures = [
        client.submit(_on_worker, job, sent, batch_size, key=f"cropflow-predict-{job.name}-{token}")
        for job in jobs
    ]
    try:
        for fut in as_completed(futures):
            on_done(fut.result())
    except BaseException:
        client.cancel(futures)
        raise
