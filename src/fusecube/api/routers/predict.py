"""``/predict/datacube``: gap-fill a posted cube (an upload or JSON arrays).

The request is parsed here; reading and filling are :mod:`fusecube.sources.upload` and
:mod:`fusecube.fusion.serving`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from fusecube.api.dependencies import AUTH
from fusecube.errors import ApiError
from fusecube.fusion import serving
from fusecube.sources.upload import CubeJSON

router = APIRouter(tags=["predict"], dependencies=AUTH)

UPLOAD_SCHEMA = {"type": "object", "required": ["file"], "properties": {
    "file": {"type": "string", "format": "binary",
             "description": "A NetCDF (.nc) file or a zip of a zarr cube."},
    "model": {"type": "string", "maxLength": 200,
              "description": "Fusion model name (default: the first one)."}}}


def _limits(request: Request) -> dict:
    settings = request.app.state.settings
    return {"max_pixels": settings.max_predict_pixels, "max_times": settings.max_predict_times}


def _predict_file(request: Request, data: bytes, filename: str, model: str | None) -> Response:
    body, prediction = serving.fill_upload(data, filename, request.app.state.models, model,
                                           **_limits(request))
    return Response(body, media_type="application/x-netcdf", headers={
        "Content-Disposition": 'attachment; filename="ndvi_fused.nc"',
        "X-Fusecube-Method": prediction.method,
        "X-Fusecube-Model": prediction.model or "",
        "X-Fusecube-Note": prediction.note,
        "X-Fusecube-Unobserved-Pixels": str(prediction.unobserved_pixels)})


@router.post("/predict/datacube",
             summary="Gap-fill a posted cube (NetCDF / zarr zip upload, or JSON arrays)",
             response_class=Response,
             responses={200: {"content": {"application/x-netcdf": {}, "application/json": {}}}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {"schema": UPLOAD_SCHEMA},
                 "application/json": {"schema": {"$ref": "#/components/schemas/CubeJSON"}}}}})
async def predict_cube(request: Request) -> Response:
    """Gap-fill a posted cube; the answer comes in the form of the request.

    An upload is answered with the fused cube as NetCDF (headers say the method and
    model); JSON arrays with JSON, as ``/predict/datacube/json`` does.
    """
    from fastapi.concurrency import run_in_threadpool
    from pydantic import ValidationError
    from starlette.datastructures import UploadFile as StarletteUpload

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            body = CubeJSON.model_validate_json(await request.body())
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'][:2]))}: {e['msg']}"
                                 for e in exc.errors()[:5])
            raise ApiError(f"Invalid cube JSON: {problems}.", 422) from exc
        return JSONResponse(await run_in_threadpool(predict_json, body, request))
    if kind != "multipart/form-data":
        raise ApiError(f"Content type {kind[:60]!r} is not accepted; send multipart/form-data "
                       "with a 'file' field, or application/json arrays.", 415)
    try:
        form = await request.form(max_files=1, max_fields=4)
    except Exception as exc:  # noqa: BLE001 - malformed multipart raises several types
        raise ApiError("The multipart body cannot be parsed; send a form with a 'file' "
                       "field (curl -F file=@cube.nc).", 422) from exc
    upload, model = form.get("file"), form.get("model")
    if not isinstance(upload, StarletteUpload):
        raise ApiError("The form has no 'file' upload; send the cube as file=@cube.nc.", 422)
    if model is not None and (not isinstance(model, str) or len(model) > 200):
        raise ApiError("'model' must be a model name of at most 200 characters.", 422)
    max_bytes = request.app.state.settings.max_upload_bytes
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ApiError("The uploaded cube is larger than this server accepts.", 413)
    return await run_in_threadpool(_predict_file, request, data, upload.filename or "upload",
                                   model or None)


@router.post("/predict/datacube/json", summary="Gap-fill a cube sent as JSON arrays")
def predict_json(body: CubeJSON, request: Request) -> dict:
    """Answers ``ndvi_fused`` as [time][y][x] arrays (null where it stays missing)."""
    return serving.fill_json(body, request.app.state.models, **_limits(request))
