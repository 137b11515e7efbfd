"""Every way a version is registered checks its folder the same way (generation.services.version_folder_problem):
the admin's add form had stored any text typed as the path (a relative one, a folder holding nothing), and a
round's or a script's `register_version` took a folder with a config.json alone; the first job on such a version
failed in a worker, after it was listed everywhere as usable."""
from __future__ import annotations

import pytest

from generation.models import ModelVersion
from generation.services import GenerationError, register_version
from tests.compare.conftest import make_version

pytestmark = pytest.mark.django_db


def _folder(root, name, *files):
    folder = root / name
    folder.mkdir()
    for file in files:
        (folder / file).write_text("{}" if file.endswith(".json") else "weights")
    return folder


def _add(client, **fields):
    form = {"name": "imported", "round": "0", "kind": ModelVersion.FULL, "parent": "", "base": "", **fields}
    return client.post("/admin/generation/modelversion/add/", {k: str(v) for k, v in form.items()})


def test_the_admin_refuses_a_folder_without_weights_and_stores_nothing(client, staff, tmp_path):
    client.force_login(staff)
    for folder, said in [
        (_folder(tmp_path, "config-only", "config.json"), "holds no weights"),
        (_folder(tmp_path, "empty"), "holds no config.json"),
        (tmp_path / "nowhere", "holds no config.json"),
        (_folder(tmp_path, "full-as-adapter", "config.json", "model.safetensors"), "holds no adapter_config.json"),
    ]:
        kind = ModelVersion.LORA if folder.name == "full-as-adapter" else ModelVersion.FULL
        base = make_version("base-for-adapter") if kind == ModelVersion.LORA else None
        response = _add(client, path=folder, kind=kind, base=base.pk if base else "")
        assert response.status_code == 200, folder
        assert said in response.content.decode(), folder
        assert not ModelVersion.objects.filter(name="imported").exists()
        if base:
            base.delete()


def test_the_admin_refuses_a_relative_path(client, staff, tmp_path, monkeypatch):
    _folder(tmp_path, "ckpt", "config.json", "model.safetensors")
    monkeypatch.chdir(tmp_path)  # it names a checkpoint from here, and nothing from a worker's directory
    client.force_login(staff)
    response = _add(client, path="ckpt")
    assert response.status_code == 200
    assert "is relative; give the folder" in response.content.decode()
    assert not ModelVersion.objects.filter(name="imported").exists()


def test_the_admin_registers_a_whole_folder_absolute_with_its_size(client, staff, tmp_path):
    folder = _folder(tmp_path, "ckpt", "config.json", "model.safetensors")
    client.force_login(staff)
    assert _add(client, path=f"{folder}/./").status_code == 302
    version = ModelVersion.objects.get(name="imported")
    assert version.path == str(folder) and version.size_bytes == len("{}") + len("weights")
    assert not version.is_current


def test_a_version_whose_folder_is_gone_can_still_be_renamed(client, staff):
    version = make_version("old")  # its folder, /tmp/old, is not there (a disk not mounted, say)
    client.force_login(staff)
    form = {"name": "old-renamed", "round": "0", "kind": version.kind, "parent": "", "base": "", "path": version.path}
    assert client.post(f"/admin/generation/modelversion/{version.pk}/change/", form).status_code == 302
    assert ModelVersion.objects.get(pk=version.pk).name == "old-renamed"
    form["path"] = "/tmp/elsewhere-that-is-not-there"  # moving it is checked
    response = client.post(f"/admin/generation/modelversion/{version.pk}/change/", form)
    assert response.status_code == 200 and "holds no config.json" in response.content.decode()
    assert ModelVersion.objects.get(pk=version.pk).path == "/tmp/old"


def test_register_version_refuses_a_folder_without_weights(tmp_path):
    with pytest.raises(GenerationError, match="holds no weights"):
        register_version("r1", _folder(tmp_path, "config-only", "config.json"))
    with pytest.raises(GenerationError, match="holds no adapter_config.json"):
        register_version("r1", _folder(tmp_path, "ckpt", "config.json", "model.safetensors"),
                         kind=ModelVersion.LORA, base=make_version("base"))
    assert not ModelVersion.objects.filter(name="r1").exists()
    assert register_version("r1", tmp_path / "ckpt").path == str(tmp_path / "ckpt")


def test_a_version_stored_with_a_relative_path_can_still_be_renamed(client, staff):
    """The admin stored any text as a path before it was checked: such a version's other fields still save."""
    version = ModelVersion.objects.create(name="old", path="var/models/old")
    client.force_login(staff)
    form = {"name": "old-renamed", "round": "0", "kind": version.kind, "parent": "", "base": "", "path": version.path}
    assert client.post(f"/admin/generation/modelversion/{version.pk}/change/", form).status_code == 302
    assert ModelVersion.objects.get(pk=version.pk).name == "old-renamed"
