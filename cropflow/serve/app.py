"""``cropflow serve``: the published maps over REST, map tiles, on-demand maps, a web map.

Routes (OpenAPI docs at ``/docs``):

- ``GET /maps``: the published maps (regions, seasons, the model version of each);
  ``GET /maps/{region}``; ``/legend``; ``/areas`` (area table, and the estimate with
  confidence intervals where there is one);
- ``GET /maps/{region}/tiles/{layer}/{z}/{x}/{y}.{png|webp}``: XYZ tiles of ``class_map``,
  ``confidence`` and ``truecolor`` (the season's median composite; rio-tiler);
- ``GET /maps/{region}/point?lon=&lat=``: class, probabilities and field at a point;
- ``POST /maps`` (bearer token): an on-demand map of an AOI and date range with a registered
  model, run as a flow run on the workers; 202 with the job; ``GET /maps/jobs/{id}``;
- ``GET /``: the web map (Leaflet, served from the package: no CDN).

Reads are open (the server listens on 127.0.0.1 by default); writes need
``settings.serve.token``. Files are found through the products' STAC catalogs only
(:mod:`cropflow.serve.catalog`), never from a request's text.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Query
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from cropflow.errors import AOIError, ConfigError, CropflowError, DataError
from cropflow.serve.catalog import PublishedMap, find_map, list_maps, read_table
from cropflow.serve.jobs import (
    JobBackend,
    JobRecord,
    JobStatus,
    MapRequest,
    all_jobs,
    check_aoi,
    check_dates,
    check_model,
    job_region,
    read_job,
    write_aoi,
    write_job,
)
from cropflow.serve.tiles import PointResult, TileFormat, query_point, render_tile
from cropflow.settings import Settings, get_settings

STATIC = Path(__file__).with_name("static")
#: Where ./run puts the Leaflet release (from the npm registry) the web map loads.
VENDOR = STATIC / "vendor"


def _error(status: int, exc: CropflowError, field: str | None = None) -> HTTPException:
    detail: dict[str, Any] = {"error": exc.message}
    if getattr(exc, "hint", None):
        detail["hint"] = exc.hint
    if field:
        detail["field"] = field
    return HTTPException(status_code=status, detail=detail)


def create_app(settings: Settings | None = None, jobs: JobBackend | None = None) -> FastAPI:
    """The app; ``jobs`` starts and reads on-demand map runs (None: POST /maps is 503)."""
    s = settings or get_settings()
    app = FastAPI(
        title="cropflow maps",
        description="Published crop-type and land-cover maps, their tiles and areas, and "
        "on-demand maps of any area and dates.",
        version="1",
    )

    def _map(region: str) -> PublishedMap:
        try:
            return find_map(s.products_dir, region)
        except ConfigError as exc:
            raise _error(404, exc, "region") from None

    app.add_middleware(BodyLimit, limit=s.serve.max_body_bytes)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/maps", summary="The published maps")
    def maps() -> list[PublishedMap]:
        return list(list_maps(s.products_dir).values())

    @app.get("/maps/jobs/{job_id}", summary="An on-demand map job")
    def job(job_id: str) -> JobStatus:
        record = read_job(s, job_id)
        if record is None:
            raise HTTPException(404, {"error": f"no job {job_id!r}", "field": "job_id"})
        return _status(record)

    @app.get("/maps/{region}", summary="One published map")
    def one_map(region: str) -> PublishedMap:
        return _map(region)

    @app.get("/maps/{region}/legend", summary="Classes and colours of a map")
    def legend(region: str) -> list[dict[str, Any]]:
        return [c.model_dump() for c in _map(region).classes]

    @app.get("/maps/{region}/areas", summary="Area per class (and the estimate, if any)")
    def areas(region: str) -> dict[str, list[dict[str, str]] | None]:
        m = _map(region)
        return {
            name: read_table(m.files[name]) if name in m.files else None
            for name in ("class_area", "class_area_estimate")
        }

    @app.get(
        "/maps/{region}/tiles/{layer}/{z}/{x}/{y}.{fmt}",
        summary="A map tile (XYZ, Web Mercator)",
        response_class=Response,
        responses={200: {"content": {"image/png": {}, "image/webp": {}}}},
    )
    def tile(region: str, layer: str, z: int, x: int, y: int, fmt: TileFormat) -> Response:
        m = _map(region)
        try:
            content = render_tile(m, layer, z, x, y, fmt)
        except ConfigError as exc:
            raise _error(404, exc, "layer") from None
        return Response(
            content,
            media_type=f"image/{fmt}",
            headers={"Cache-Control": "public, max-age=60"},
        )

    @app.get("/maps/{region}/point", summary="Class, probabilities and field at a point")
    def point(
        region: str,
        lon: Annotated[float, Query(ge=-180, le=180)],
        lat: Annotated[float, Query(ge=-90, le=90)],
    ) -> PointResult:
        m = _map(region)
        try:
            return query_point(m, lon, lat)
        except ConfigError as exc:
            raise _error(422, exc, "lon/lat") from None

    @app.post("/maps", status_code=202, summary="Request an on-demand map (bearer token)")
    def request_map(
        body: dict[str, Any], authorization: Annotated[str | None, Header()] = None
    ) -> JobStatus:
        _authorise(s, authorization)
        try:
            req = MapRequest.model_validate(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "body"
            raise HTTPException(422, {"error": err["msg"], "field": field}) from None
        existing = read_job(s, req.key())
        if existing is not None and _state_of(existing) not in ("FAILED", "CRASHED", "CANCELLED"):
            return _status(existing)  # identical request: the same job (and map)
        _check(req, s, model=False)
        if jobs is None:
            raise HTTPException(503, {"error": "on-demand maps need a Prefect server"})
        active = [r for r in all_jobs(s) if not _final(r)]
        if len(active) >= s.serve.max_active_jobs:
            raise HTTPException(
                429,
                {
                    "error": f"{len(active)} map jobs are running already",
                    "field": "body",
                    "hint": "retry when one has finished",
                },
            )
        _check(req, s, model=True)  # after the cheap refusals: it loads the model
        aoi_file = write_aoi(req, s)
        region = job_region(req, s, aoi_file)
        try:
            run_id = jobs.submit(s.serve.job_deployment, {"params": {"region": region}})
        except CropflowError as exc:
            raise _error(503, exc) from None
        record = JobRecord(id=req.key(), region=region["name"], run_id=run_id, request=req)
        write_job(s, record)
        return _status(record)

    def _state_of(record: JobRecord) -> str:
        return jobs.state(record.run_id).state if jobs is not None else "UNKNOWN"

    def _final(record: JobRecord) -> bool:
        return jobs is None or jobs.state(record.run_id).final

    def _status(record: JobRecord) -> JobStatus:
        published = (s.products_dir / record.region / "catalog.json").is_file()
        state = jobs.state(record.run_id) if jobs is not None else None
        return JobStatus(
            id=record.id,
            region=record.region,
            state=state.state if state else ("COMPLETED" if published else "UNKNOWN"),
            state_name=state.state_name if state else "",
            message=state.message if state else None,
            done=bool(state and state.final) or (state is None and published),
            map=f"/maps/{record.region}" if published else None,
            request=record.request,
        )

    if VENDOR.is_dir():
        app.mount("/static/vendor", StaticFiles(directory=VENDOR), name="vendor")
    app.mount("/static/app", StaticFiles(directory=STATIC / "app"), name="app")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "app" / "index.html")

    return app


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, by its Content-Length or,
    sent in chunks without one, as soon as the chunks read exceed it (the body, at most
    ``limit`` bytes, is then handed on to the app)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self.limit:
                await self._refuse(send)
                return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        detail = {"error": "request body too large", "field": "body",
                  "hint": f"at most {self.limit} bytes"}  # fmt: skip
        await JSONResponse({"detail": detail}, status_code=413)({"type": "http"}, _no_receive, send)


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


def _authorise(s: Settings, authorization: str | None) -> None:
    if s.serve.token is None:
        raise HTTPException(
            403,
            {
                "error": "on-demand maps are disabled on this server",
                "field": "authorization",
                "hint": "set CROPFLOW_SERVE__TOKEN where `cropflow serve` runs",
            },
        )
    given = (authorization or "").removeprefix("Bearer ").strip()
    expected = s.serve.token.get_secret_value()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            401,
            {
                "error": "missing or wrong token",
                "field": "authorization",
                "hint": "send `Authorization: Bearer <CROPFLOW_SERVE__TOKEN>`",
            },
        )


def _check(req: MapRequest, s: Settings, model: bool) -> None:
    """Validate a request's dates and AOI, or its model; 422 naming the field."""
    steps: list[tuple[str, Any]] = (
        [("model", lambda: check_model(req, s))]
        if model
        else [
            ("start/end", lambda: check_dates(req)),
            ("aoi", lambda: check_aoi(req, s.serve.max_aoi_km2)),
        ]
    )
    for field, step in steps:
        try:
            step()
        except (AOIError, ConfigError, DataError) as exc:
            raise _error(422, exc, field) from None
