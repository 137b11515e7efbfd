"""README's pages table agrees with the URL configuration: every page a person opens (a URL without arguments that
answers GET with a page) is listed, nothing listed is missing, and "who" matches who the app lets in."""
import re
from pathlib import Path

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

README = Path(__file__).resolve().parent.parent / "README.md"
# Not pages: sign-in plumbing, the admin's own screens (the table lists /admin/ once), the favicon redirect, the
# health check and the JSON API's endpoints (the table lists the API's reference page, /api/v1/docs).
NOT_PAGES = re.compile(r"^/(accounts/|admin/.+|favicon\.ico$|healthz$|api/v1/(?!docs$))")


def readme_pages() -> dict[str, str]:
    text = README.read_text()
    table = text.split("## Pages", 1)[1].split("\n## ", 1)[0]
    return {m[1]: m[2].strip() for m in re.finditer(r"^\| `(/[^`]*)` \| ([^|]+) \|", table, re.M)}


def plain_paths() -> list[str]:
    """Every URL without arguments, as a path."""
    found = []

    def walk(patterns, prefix: str) -> None:
        for p in patterns:
            route = str(p.pattern)
            if "<" in route or "(?P" in route or "^" in route:
                continue
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + route)
            elif isinstance(p, URLPattern):
                found.append("/" + prefix + route)

    walk(get_resolver().url_patterns, "")
    return sorted(set(found))


@pytest.mark.django_db
def test_the_readme_pages_table_matches_the_url_configuration(client, staff, annotator):
    listed = readme_pages()
    assert listed, "README.md has no pages table under '## Pages'"
    client.force_login(staff)
    pages = [p for p in plain_paths() if not NOT_PAGES.match(p) and client.get(p).status_code == 200]
    assert sorted(listed) == sorted(pages), "README's pages table and the URL configuration disagree"

    client.force_login(annotator)
    for path, who in listed.items():
        if path == "/admin/":
            continue
        status = client.get(path).status_code
        assert (status == 403) == (who == "staff"), f"{path}: README says {who!r}, an annotator gets {status}"
