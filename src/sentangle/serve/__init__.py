"""`sentangle serve`: trained model folders behind an HTTP API, a demo page and a results browser.

    app.py      the FastAPI application: routes, limits, error answers
    models.py   a served model (loaded once per process, text encoder kept in memory), its card,
                the requests it is asked as datasets, and the short-window batching of text requests
    browse.py   the results browser over a folder of run folders (--runs)
    server.py   uvicorn: bind, workers
    static/     the demo page and the results browser (plain HTML, JS and CSS; nothing fetched)

FastAPI, uvicorn, pydantic and python-multipart come with the extra `sentangle[serve]`; they are
imported only by this package.
"""
