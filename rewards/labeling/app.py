"""The labeling web app (FastAPI): one page with the context and four samples; pick the best.

Security model:

* every API call needs a labeler: ``Authorization: Bearer <token>`` (scripts) or the session cookie set
  by ``POST /api/login`` (the page). A session lives on the server (:mod:`rewards.labeling.sessions`):
  the cookie (HttpOnly, SameSite=Strict, ``Secure`` with ``secure_cookies``) carries only a random id;
  the session expires after ``session_seconds`` and ends at logout, or when the labeler's token is revoked
  or rotated (``textenv labelers revoke|rotate NAME``). State-changing requests that authenticate by
  cookie must also carry the ``X-CSRF-Token`` header returned at login, bound to the session (CSRF
  protection). Bearer requests carry no ambient credential, so they need no CSRF token;
* a labeler reads only their own answers; answers are rows of their own, never updated by others;
* model text is untrusted: the page inserts it with ``textContent`` only, and a Content-Security-Policy
  without ``unsafe-inline`` stops any script that might still get into the page; nosniff, no framing and
  no referrer on every response, errors included;
* every request body is a typed model (``extra="forbid"``, strict types: ``true`` is no integer) and at
  most ``max_body_bytes`` long (413); every malformed or out-of-range value is a 4xx with a bounded
  message that never echoes more than ~100 characters of the input; the store's checks (question exists,
  choice in range, no double submit, leases) give 404/409/422 with a message; an answer is acknowledged
  (200) only after its transaction has committed.

The OpenAPI schema is served at ``/api/openapi.json`` (the test suite fuzzes the API from it).
"""

import json
import math
import threading
from collections.abc import Callable
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any, Literal

try:
    from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
    from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.datastructures import Headers, MutableHeaders
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError("the labeling app needs FastAPI and uvicorn: pip install 'textenv[labeling]'.") from exc

from rewards.labeling.store import ANSWERS_PAGE, ANSWERS_PAGE_MAX, Conflict, Labeler, LabelingStore

COOKIE = "textenv_session"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_SESSION_SECONDS = 12 * 3600.0
SQLITE_INT_END = 2**63  # SQLite integers are < 2**63 (a bound exact in the float the OpenAPI schema holds)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
INSTRUCTIONS = {
    "sentiment": "Pick the continuation that is the most positive and happy.",
    "descriptive": "Pick the continuation that is the most vividly descriptive: concrete, sensory detail.",
    "summarize": (
        "Pick the summary that is the most accurate and covers the most important points of the text; "
        "penalise made-up facts and copying that misses the point."
    ),
}
HINTS = {
    ("POST", "/api/login"): 'send {"token": "<your access token>"}.',
    ("POST", "/api/answers"): (
        'send {"id": <id from /api/next>, "action": "choose", "skip" or "flag", '
        '"choice": <0-based sample index, for choose>} as application/json.'
    ),
}


QUERY_RANGES = {
    "after": f"use 0 (the first page) or the next_after of the previous page: an integer from 0 to {2**63 - 1}",
    "limit": f"use an integer from 1 to {ANSWERS_PAGE_MAX} (default {ANSWERS_PAGE})",
}
"""What each query parameter accepts, said in full when a value is refused (GET /api/answers)."""


def instructions_for(task: str) -> str:
    t = task.lower()
    if "summar" in t:
        return INSTRUCTIONS["summarize"]
    if "descript" in t:
        return INSTRUCTIONS["descriptive"]
    return INSTRUCTIONS["sentiment"]


# ------------------------------------------------------------------------------ request / response models
class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    token: str = Field(min_length=1, max_length=256, description="your access token")


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: int = Field(ge=1, lt=SQLITE_INT_END, description="the id from /api/next")
    action: Literal["choose", "skip", "flag"] = "choose"
    choice: int | None = Field(default=None, ge=0, le=2**31 - 1, description="0-based sample index (choose)")


class ErrorOut(BaseModel):
    detail: str


class SessionOut(BaseModel):
    labeler: str
    admin: bool
    csrf: str | None = Field(description="the X-CSRF-Token of this session (null for bearer requests)")


class OkOut(BaseModel):
    ok: bool


class Progress(BaseModel):
    answered: int
    pending_questions: int


class QuestionOut(BaseModel):
    done: Literal[False]
    id: int
    question_id: str
    task: str
    instructions: str
    query: str
    samples: list[str]
    progress: Progress
    lease_seconds: float = Field(description="how long the question is held for you")


class DoneOut(BaseModel):
    done: Literal[True]
    progress: Progress
    lease_seconds: float


class AnswerOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    ok: bool
    question_id: str
    judgement_id: int | None
    action: str


class AnswerRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    question_id: str
    comparison_id: int
    action: str
    choice: int | None
    created: float


class MyAnswersOut(BaseModel):
    labeler: str
    answers: list[AnswerRow] = Field(description="this page: at most `limit` answers, oldest first")
    next_after: int | None = Field(
        description="pass as ?after= for the next page; null on the last page (no answers after these)"
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in [
        (400, "a body that is not UTF-8 text, or a malformed Content-Length"),
        (401, "no credentials, an unknown or revoked token, or a session that ended"),
        (403, "missing or wrong X-CSRF-Token on a cookie request, or not an admin"),
        (404, "no such question"),
        (409, "the question cannot take this answer now (answered, closed, leased to someone else)"),
        (413, "request body over the size limit"),
        (422, "a malformed or out-of-range value"),
    ]
}


# ------------------------------------------------------------------------------------------- the app
def create_app(
    store_path: str | Path,
    task: str | None = None,
    duplicate_share: float = 0.05,
    lease_seconds: float = 600.0,
    session_seconds: float = DEFAULT_SESSION_SECONDS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    secure_cookies: bool = False,
):
    """The FastAPI app serving ``store_path`` (a comparison store; questions come from ``textenv sample``
    or the online loop). ``task`` restricts the questions shown; ``lease_seconds`` is how long a question
    served by ``/api/next`` is held for its labeler; ``session_seconds`` the lifetime of a login;
    ``max_body_bytes`` the largest request body (413 beyond); ``secure_cookies`` marks the session cookie
    ``Secure`` (behind a TLS reverse proxy)."""
    if not (isinstance(session_seconds, int | float) and 0 < session_seconds < math.inf):
        raise ValueError(
            f"session_seconds={session_seconds} must be a positive number of seconds (default 12 h)."
        )
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ValueError(f"max_body_bytes={max_body_bytes!r} must be a positive integer (default 65536).")
    store = LabelingStore(store_path, duplicate_share=duplicate_share, task=task, lease_seconds=lease_seconds)
    store.session_seconds = float(session_seconds)
    lock = threading.Lock()  # one SQLite connection: one request at a time touches it
    app = FastAPI(
        title="textenv labeling",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        responses=ERROR_RESPONSES,
    )
    app.state.store = store
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(SecurityHeaders)  # added last: outermost, so the 413 gets the headers too
    app.add_exception_handler(RequestValidationError, _validation_error)
    labeler, admin = _auth_dependencies(store, lock)
    _add_pages(app, resources.files("rewards.labeling") / "static")
    _add_session_routes(app, store, lock, labeler, secure_cookies)
    _add_question_routes(app, store, lock, labeler)
    _add_admin_routes(app, store, lock, admin, task)
    return app


class SecurityHeaders:
    """Pure ASGI middleware: the CSP (no inline script or style) and the other hardening headers on every
    response, errors and 413s included."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers[key] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimit:
    """Pure ASGI middleware: a request whose body is over ``max_bytes`` gets a 413 (JSON) before the app
    sees it, whether it says so in Content-Length or streams it chunked (the bytes are counted as they
    arrive; at most ``max_bytes`` are ever held)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _refuse(self, status: int, detail: str) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = self._refuse(
            413, f"request body over {self.max_bytes} bytes; answers and logins are small JSON objects."
        )
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                await self._refuse(400, "Content-Length must be a whole number of bytes.")(
                    scope, receive, send
                )
                return
            if int(length) > self.max_bytes:
                await too_large(scope, receive, send)
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nobody to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _bounded(value: Any, limit: int = 100) -> str:
    """``value`` as text, cut to ``limit`` characters (an error message never echoes unbounded input)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _describe(error: dict) -> str:
    if error.get("type") == "json_invalid":
        where = error.get("loc", ("body", "?"))[-1]
        return f"invalid JSON at character {_bounded(where, 20)} ({_bounded(error.get('ctx', {}).get('error', ''))})"
    where = tuple(error.get("loc", ()))
    if len(where) == 2 and where[0] == "query" and where[1] in QUERY_RANGES:
        return f"{where[1]}={_bounded(error.get('input'), 40)!r} is not accepted: {QUERY_RANGES[where[1]]}"
    loc = ".".join(_bounded(p, 40) for p in where if p != "body") or "body"
    text = f"{loc}: {_bounded(error.get('msg', 'invalid'), 200)}"
    if error.get("type") not in ("missing", "extra_forbidden") and "input" in error:
        return f"{text} (got {_bounded(repr(error['input']))})"
    return text


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 422 with a short message naming each bad field (at most 5), never the whole body."""
    errors = list(exc.errors())
    parts = [_describe(e) for e in errors[:5]]
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    hint = HINTS.get((request.method, request.url.path), "")
    detail = f"invalid request: {'; '.join(parts)}." + (f" {hint}" if hint else "")
    return JSONResponse({"detail": detail}, status_code=422)


def _auth_dependencies(
    store: LabelingStore, lock: threading.Lock
) -> tuple[Callable[..., Labeler], Callable[..., Labeler]]:
    """The ``labeler`` dependency (bearer token, or session cookie plus CSRF header on state-changing
    requests) and the ``admin`` dependency on top of it."""
    bearer_scheme = HTTPBearer(auto_error=False, description="an access token (textenv labelers add NAME)")
    cookie_scheme = APIKeyCookie(
        name=COOKIE,
        auto_error=False,
        description="the session of POST /api/login; POST requests also need its X-CSRF-Token header",
    )

    def labeler(
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
        session: str | None = Depends(cookie_scheme),
    ) -> Labeler:
        request.state.session = None
        if bearer is not None:
            with lock:
                who = store.authenticate(bearer.credentials)
            if who is None:
                raise HTTPException(
                    401, "unknown or revoked access token; ask an admin for one (textenv labelers add NAME)."
                )
            request.state.via = "bearer"
            return who
        with lock:
            who = store.session_labeler(session)
        if who is None:
            raise HTTPException(
                401,
                "not logged in, or the session expired or was ended: POST /api/login with your token, "
                "or send Authorization: Bearer.",
            )
        request.state.via, request.state.session = "cookie", session
        if request.method not in ("GET", "HEAD") and not store.check_csrf(
            session, request.headers.get("x-csrf-token")
        ):
            raise HTTPException(
                403, "missing or wrong X-CSRF-Token header (returned by /api/login and /api/me)."
            )
        return who

    def admin(who: Labeler = Depends(labeler)) -> Labeler:
        if not who.admin:
            raise HTTPException(403, f"{who.name} is not an admin (textenv labelers add NAME --admin).")
        return who

    return labeler, admin


def _add_pages(app: FastAPI, static) -> None:
    """The labeling page, the admin page and their scripts and style (from the ``static`` folder)."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return (static / "index.html").read_text()

    @app.get("/admin", response_class=HTMLResponse, include_in_schema=False)
    def admin_page() -> str:
        return (static / "admin.html").read_text()

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        types = {"app.js": "text/javascript", "admin.js": "text/javascript", "style.css": "text/css"}
        if name not in types:
            raise HTTPException(404, f"no static file {_bounded(name, 60)!r}.")
        return Response((static / name).read_text(), media_type=types[name])


def _add_session_routes(
    app: FastAPI, store: LabelingStore, lock: threading.Lock, labeler: Callable, secure_cookies: bool
) -> None:
    """``/api/login`` (token in, session cookie and CSRF token out), ``/api/logout`` (ends the session on
    the server) and ``/api/me``."""

    @app.post("/api/login")
    def login(body: LoginIn, response: Response) -> SessionOut:
        with lock:
            who = store.authenticate(body.token)
            if who is None:
                raise HTTPException(
                    401, "unknown or revoked access token; ask an admin for one (textenv labelers add NAME)."
                )
            session = store.open_session(who.name)
        response.set_cookie(
            COOKIE,
            session,
            max_age=int(store.session_seconds),
            httponly=True,
            samesite="strict",
            secure=secure_cookies,
        )
        return SessionOut(labeler=who.name, admin=who.admin, csrf=store.csrf_token(session))

    @app.post("/api/logout")
    def logout(request: Request, response: Response, who: Labeler = Depends(labeler)) -> OkOut:
        if request.state.session:
            with lock:
                store.end_session(request.state.session)
        response.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=secure_cookies)
        return OkOut(ok=True)

    @app.get("/api/me")
    def me(request: Request, who: Labeler = Depends(labeler)) -> SessionOut:
        session = request.state.session
        return SessionOut(
            labeler=who.name, admin=who.admin, csrf=store.csrf_token(session) if session else None
        )


def _add_question_routes(app: FastAPI, store: LabelingStore, lock: threading.Lock, labeler: Callable) -> None:
    """``/api/next`` (the next question, leased to you), ``POST /api/answers`` and ``GET /api/answers``."""

    @app.get("/api/next")
    def next_question(who: Labeler = Depends(labeler)) -> QuestionOut | DoneOut:
        with lock:
            q = store.next_question(who.name)
            progress = store.progress(who.name)
        if q is None:
            return DoneOut(done=True, progress=progress, lease_seconds=store.lease_seconds)
        return QuestionOut(
            done=False,
            id=q.id,
            question_id=q.question_id,
            task=q.task,
            instructions=instructions_for(q.task),
            query=q.query_text or "",
            samples=q.sample_texts or ["" for _ in q.samples],
            progress=progress,
            lease_seconds=store.lease_seconds,
        )

    @app.post("/api/answers")
    def answer(body: AnswerIn, who: Labeler = Depends(labeler)) -> AnswerOut:
        try:
            with lock:
                out = store.answer(who.name, body.id, body.action, body.choice)
        except KeyError as exc:
            raise HTTPException(404, f"no question with id {body.id}.") from exc
        except Conflict as exc:  # answered already, closed, leased to someone else: before ValueError
            raise HTTPException(409, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return AnswerOut(ok=True, **out)

    @app.get("/api/answers")
    def my_answers(
        who: Labeler = Depends(labeler),
        after: int = Query(
            0, ge=0, lt=SQLITE_INT_END, description="the next_after of the previous page (0: the first page)"
        ),
        limit: int = Query(
            ANSWERS_PAGE, ge=1, le=ANSWERS_PAGE_MAX, description="the most answers in this page"
        ),
    ) -> MyAnswersOut:
        """Your answers, skips and flags, oldest first, a page at a time (keyset paging: O(log n + limit)
        whatever the number of answers): follow ``next_after`` until it is null."""
        with lock:
            page, next_after = store.answers_page(who.name, after, limit)
        return MyAnswersOut(labeler=who.name, answers=page, next_after=next_after)


def _add_admin_routes(
    app: FastAPI, store: LabelingStore, lock: threading.Lock, admin: Callable, task: str | None
) -> None:
    """``/api/admin/stats``, ``/api/admin/dashboard`` (the admin page's charts) and ``/api/admin/export``
    (the labelled comparisons, JSON lines: the one response whose size, and cost, is the store's), admins
    only."""

    @app.get("/api/admin/stats")
    def stats(who: Labeler = Depends(admin)) -> dict[str, Any]:
        with lock:
            return store.stats()

    @app.get("/api/admin/dashboard")
    def dashboard(who: Labeler = Depends(admin)) -> dict[str, Any]:
        """What the admin page draws (see :meth:`LabelingStore.dashboard`), and who asked."""
        with lock:
            data = store.dashboard()
        return {"me": {"labeler": who.name, "admin": who.admin}, **data}

    @app.get("/api/admin/export", response_class=PlainTextResponse)
    def export(who: Labeler = Depends(admin)) -> str:
        with lock:
            rows = store.comparisons.labelled(task=task)
        return "".join(json.dumps(asdict(c)) + "\n" for c in rows)


def serve(
    store_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    task: str | None = None,
    **app_options: Any,
) -> None:
    """Run the app with uvicorn (bound to loopback unless ``host`` says otherwise); ``app_options`` go to
    :func:`create_app` (lease_seconds, session_seconds, max_body_bytes, secure_cookies)."""
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover
        raise ImportError("the labeling app needs uvicorn: pip install 'textenv[labeling]'.") from exc
    uvicorn.run(create_app(store_path, task=task, **app_options), host=host, port=port, log_level="warning")
