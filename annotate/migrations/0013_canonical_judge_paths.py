"""A judge's account and a round's routing judge were kept under the path as typed: "judges.rules.length_target"
labelled as another judge than the "judges.rules:length_target" a round routes by, and the round was never routed.
New ones are kept under one spelling (judges.canonical_path: stripped, the callable in colon form, its arguments
URL-encoded as read); this brings the stored ones to it. A text that is no judge path is left as it is."""
from urllib.parse import parse_qsl, urlencode

from django.db import migrations


def _canonical(path: str) -> str:
    """judges.canonical_path as of this migration (a migration keeps its own copy: the function may change)."""
    text = path.strip()
    name, _, query = text.partition("?")
    module, _, attr = name.partition(":") if ":" in name else name.rpartition(".")
    if not module or not attr or not all(part.isidentifier() for part in module.split(".") + attr.split(".")):
        return path
    query = urlencode(parse_qsl(query, keep_blank_values=True), safe=":/,") if query else ""
    return f"{module}:{attr}" + (f"?{query}" if query else "")


def canonical(apps, schema_editor):
    for model, field in (("LabellingRound", "route_judge"), ("AnnotatorProfile", "judge_path")):
        rows = apps.get_model("annotate", model).objects.exclude(**{field: ""})
        for row in rows:
            path = getattr(row, field)
            if _canonical(path) != path:
                setattr(row, field, _canonical(path))
                row.save(update_fields=[field])


class Migration(migrations.Migration):
    dependencies = [("annotate", "0012_assignment_served_in")]
    operations = [migrations.RunPython(canonical, migrations.RunPython.noop)]
