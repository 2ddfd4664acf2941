"""The labeling web app (FastAPI): one page with the context and four samples; pick the best.

Security model:

* every API call needs a labeler: ``Authorization: Bearer <token>`` (scripts) or the session cookie set
  by ``POST /api/login`` (the page). The cookie is HttpOnly, SameSite=Strict and signed with the
  server's secret; state-changing requests that authenticate by cookie must also carry the
  ``X-CSRF-Token`` header returned at login (CSRF protection). Bearer requests carry no ambient
  credential, so they need no CSRF token;
* a labeler reads only their own answers; answers are rows of their own, never updated by others;
* model text is untrusted: the page inserts it with ``textContent`` only, and a Content-Security-Policy
  without ``unsafe-inline`` stops any script that might still get into the page;
* every field is validated (question exists, choice in range, no double submit) with a 4xx and a
  message; an answer is acknowledged (200) only after its transaction has committed.
"""

import json
import threading
from collections.abc import Callable
from dataclasses import asdict
from importlib import resources
from pathlib import Path

try:
    from fastapi import Body, Depends, FastAPI, HTTPException, Request, Response
    from fastapi.responses import HTMLResponse, PlainTextResponse
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError("the labeling app needs FastAPI and uvicorn: pip install 'textenv[labeling]'.") from exc

from rewards.labeling.store import AlreadyAnswered, Labeler, LabelingStore

COOKIE = "textenv_session"
INSTRUCTIONS = {
    "sentiment": "Pick the continuation that is the most positive and happy.",
    "descriptive": "Pick the continuation that is the most vividly descriptive: concrete, sensory detail.",
    "summarize": (
        "Pick the summary that is the most accurate and covers the most important points of the text; "
        "penalise made-up facts and copying that misses the point."
    ),
}


def instructions_for(task: str) -> str:
    t = task.lower()
    if "summar" in t:
        return INSTRUCTIONS["summarize"]
    if "descript" in t:
        return INSTRUCTIONS["descriptive"]
    return INSTRUCTIONS["sentiment"]


def create_app(store_path: str | Path, task: str | None = None, duplicate_share: float = 0.05):
    """The FastAPI app serving ``store_path`` (a comparison store; questions come from ``textenv sample``
    or the online loop). ``task`` restricts the questions shown."""
    store = LabelingStore(store_path, duplicate_share=duplicate_share, task=task)
    lock = threading.Lock()  # one SQLite connection: one request at a time touches it
    app = FastAPI(title="textenv labeling", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    _add_security_headers(app)
    labeler, admin = _auth_dependencies(store, lock)
    _add_pages(app, resources.files("rewards.labeling") / "static")
    _add_session_routes(app, store, lock, labeler)
    _add_question_routes(app, store, lock, labeler)
    _add_admin_routes(app, store, lock, admin, task)
    return app


def _add_security_headers(app: FastAPI) -> None:
    """The CSP (no inline script or style) and the other hardening headers, on every response."""

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; frame-ancestors 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response


def _auth_dependencies(
    store: LabelingStore, lock: threading.Lock
) -> tuple[Callable[..., Labeler], Callable[..., Labeler]]:
    """The ``labeler`` dependency (bearer token, or session cookie plus CSRF header on state-changing
    requests) and the ``admin`` dependency on top of it."""

    def labeler(request: Request) -> Labeler:
        auth = request.headers.get("authorization", "")
        with lock:
            if auth.lower().startswith("bearer "):
                who = store.authenticate(auth[7:].strip())
                if who is None:
                    raise HTTPException(
                        401, "unknown access token; ask an admin for one (textenv labelers add NAME)."
                    )
                request.state.via = "bearer"
                return who
            who = store.labeler_from_cookie(request.cookies.get(COOKIE))
        if who is None:
            raise HTTPException(
                401, "not logged in: POST /api/login with your token, or send Authorization: Bearer."
            )
        request.state.via = "cookie"
        if request.method not in ("GET", "HEAD") and request.headers.get("x-csrf-token") != store.csrf_token(
            who.name
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

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return (static / "index.html").read_text()

    @app.get("/admin", response_class=HTMLResponse)
    def admin_page() -> str:
        return (static / "admin.html").read_text()

    @app.get("/static/{name}")
    def static_file(name: str) -> Response:
        types = {"app.js": "text/javascript", "admin.js": "text/javascript", "style.css": "text/css"}
        if name not in types:
            raise HTTPException(404, f"no static file {name!r}.")
        return Response((static / name).read_text(), media_type=types[name])


def _add_session_routes(app: FastAPI, store: LabelingStore, lock: threading.Lock, labeler: Callable) -> None:
    """``/api/login`` (token in, session cookie and CSRF token out), ``/api/logout`` and ``/api/me``."""

    @app.post("/api/login")
    def login(response: Response, body: dict = Body(...)) -> dict:
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise HTTPException(422, 'send {"token": "<your access token>"}.')
        with lock:
            who = store.authenticate(token)
        if who is None:
            raise HTTPException(
                401, "unknown access token; ask an admin for one (textenv labelers add NAME)."
            )
        response.set_cookie(COOKIE, store.session_cookie(who.name), httponly=True, samesite="strict")
        return {"labeler": who.name, "admin": who.admin, "csrf": store.csrf_token(who.name)}

    @app.post("/api/logout")
    def logout(response: Response, who: Labeler = Depends(labeler)) -> dict:
        response.delete_cookie(COOKIE)
        return {"ok": True}

    @app.get("/api/me")
    def me(who: Labeler = Depends(labeler)) -> dict:
        return {"labeler": who.name, "admin": who.admin, "csrf": store.csrf_token(who.name)}


def _add_question_routes(app: FastAPI, store: LabelingStore, lock: threading.Lock, labeler: Callable) -> None:
    """``/api/next`` (the next question), ``POST /api/answers`` (answer it) and ``GET /api/answers``."""

    @app.get("/api/next")
    def next_question(who: Labeler = Depends(labeler)) -> dict:
        with lock:
            q = store.next_question(who.name)
            progress = store.progress(who.name)
        if q is None:
            return {"done": True, "progress": progress}
        return {
            "done": False,
            "id": q.id,
            "question_id": q.question_id,
            "task": q.task,
            "instructions": instructions_for(q.task),
            "query": q.query_text or "",
            "samples": q.sample_texts or ["" for _ in q.samples],
            "progress": progress,
        }

    @app.post("/api/answers")
    def answer(body: dict = Body(...), who: Labeler = Depends(labeler)) -> dict:
        unknown = set(body) - {"id", "action", "choice"}
        if unknown:
            raise HTTPException(
                422, f"unknown fields {sorted(unknown)}; send id, action and (for choose) choice."
            )
        qid, action, choice = body.get("id"), body.get("action", "choose"), body.get("choice")
        if not isinstance(qid, int) or isinstance(qid, bool):
            raise HTTPException(422, f"id={qid!r} must be the integer id from /api/next.")
        try:
            with lock:
                out = store.answer(who.name, qid, action, choice)
        except KeyError as exc:
            raise HTTPException(404, f"no question with id {qid}.") from exc
        except AlreadyAnswered as exc:
            raise HTTPException(409, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return {"ok": True, **out}

    @app.get("/api/answers")
    def my_answers(who: Labeler = Depends(labeler)) -> dict:
        with lock:
            return {"labeler": who.name, "answers": store.my_answers(who.name)}


def _add_admin_routes(
    app: FastAPI, store: LabelingStore, lock: threading.Lock, admin: Callable, task: str | None
) -> None:
    """``/api/admin/stats`` and ``/api/admin/export`` (the labelled comparisons, JSON lines), admins only."""

    @app.get("/api/admin/stats")
    def stats(who: Labeler = Depends(admin)) -> dict:
        with lock:
            return store.stats()

    @app.get("/api/admin/export", response_class=PlainTextResponse)
    def export(who: Labeler = Depends(admin)) -> str:
        with lock:
            rows = store.comparisons.labelled(task=task)
        return "".join(json.dumps(asdict(c)) + "\n" for c in rows)


def serve(store_path: str | Path, host: str = "127.0.0.1", port: int = 8000, task: str | None = None) -> None:
    """Run the app with uvicorn (bound to loopback unless ``host`` says otherwise)."""
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover
        raise ImportError("the labeling app needs uvicorn: pip install 'textenv[labeling]'.") from exc
    uvicorn.run(create_app(store_path, task=task), host=host, port=port, log_level="warning")
