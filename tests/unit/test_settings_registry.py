"""Settings from SEM_* variables, the backend registry, engine choice."""

from __future__ import annotations

import pytest

from sem.errors import UnknownBackendError
from sem.search.registry import available_backends, load_backend_class
from sem.settings import EngineKind, Settings


def test_settings_read_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("SEM_HOME", str(tmp_path))
    monkeypatch.setenv("SEM_ENGINE", "hf")
    monkeypatch.setenv("SEM_REDIS_URL", "redis://127.0.0.1:6390/1")
    monkeypatch.setenv("SEM_LOOP__MAX_SEARCHES", "5")
    monkeypatch.setenv("SEM_VLLM__KV_CACHE_GIB", "2")
    s = Settings()
    assert s.home_dir == tmp_path and s.engine is EngineKind.hf
    assert s.redis_url == "redis://127.0.0.1:6390/1"
    assert s.loop.max_searches == 5 and s.vllm.kv_cache_gib == 2
    assert s.model_path.startswith(str(tmp_path))


def test_search_settings_nest_and_the_old_flat_names_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEM_SEARCH__BACKEND", "retriever")
    monkeypatch.setenv("SEM_SEARCH__RETRIEVER_URL", "http://retrieve:8001")
    s = Settings()
    assert s.search.backend == "retriever" and s.search.retriever_url == "http://retrieve:8001"
    monkeypatch.delenv("SEM_SEARCH__BACKEND")
    monkeypatch.setenv("SEM_SEARCH_BACKEND", "milvus")  # the flat name of before
    monkeypatch.setenv("SEM_MILVUS_MODE", "hybrid")
    with pytest.warns(DeprecationWarning, match="SEM_SEARCH_BACKEND, SEM_MILVUS_MODE: deprecated"):
        s = Settings()
    assert s.search.backend == "milvus" and s.search.milvus_mode == "hybrid"
    assert s.search.retriever_url == "http://retrieve:8001"  # the nested names still apply beside them
    with pytest.warns(DeprecationWarning):
        assert Settings(search_timeout_s=3).search.timeout_s == 3  # keyword arguments too


def test_bad_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEM_ENGINE", "tensorrt")
    with pytest.raises(ValueError, match="engine"):
        Settings()


def test_registry_knows_bm25_and_names_the_choices() -> None:
    assert "bm25" in available_backends()
    assert load_backend_class("bm25").name == "bm25"
    with pytest.raises(UnknownBackendError, match="choose one of: bm25") as err:
        load_backend_class("nope")
    assert isinstance(err.value, KeyError)


def test_importing_sem_does_not_import_torch_or_vllm() -> None:
    import subprocess
    import sys

    code = (
        "import sem, sem.loop, sem.cache, sem.search, sem.engines, sys; "
        "print('torch' in sys.modules, 'vllm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_missing_assets_give_one_clear_error(tmp_path) -> None:
    from sem.assets import ensure_corpus, ensure_model
    from sem.errors import AssetsMissingError

    with pytest.raises(AssetsMissingError, match="make assets"):
        ensure_model(tmp_path)
    with pytest.raises(AssetsMissingError, match="SEM_CORPUS"):
        ensure_corpus(tmp_path)


def test_a_request_without_a_policy_gets_the_served_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from sem.loop import LoopOptions, SearchPolicy

    monkeypatch.setenv("SEM_LOOP__POLICY", "confidence")
    defaults = Settings().loop
    assert LoopOptions.from_defaults(defaults).policy is SearchPolicy.confidence
    assert LoopOptions.from_defaults(defaults, policy=SearchPolicy.never).policy is SearchPolicy.never
    assert LoopOptions.from_defaults(defaults, policy=None).policy is SearchPolicy.confidence
    monkeypatch.setenv("SEM_LOOP__POLICY", "sometimes")
    with pytest.raises(ValueError, match="policy"):
        Settings()


def test_adapters_are_named_paths_and_the_default_must_be_served(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("SEM_HOME", str(tmp_path))
    monkeypatch.setenv("SEM_MODEL", "base")
    monkeypatch.setenv("SEM_ADAPTERS", "world=sem/adapters/sem-world-135m, mine = /srv/adapter")
    monkeypatch.setenv("SEM_DEFAULT_MODEL", "mine")
    s = Settings()
    assert s.adapters == {"world": "sem/adapters/sem-world-135m", "mine": "/srv/adapter"}
    assert s.default_model == "mine"
    assert (
        s.model_path == str(tmp_path / "models" / "SmolLM2-135M-Instruct") and s.model_name == "SmolLM2-135M-Instruct"
    )
    monkeypatch.setenv("SEM_ADAPTERS", "world")
    with pytest.raises(ValueError, match="SEM_ADAPTERS: expected name=path"):
        Settings()
    monkeypatch.setenv("SEM_ADAPTERS", "world=/a")
    with pytest.raises(
        ValueError, match=r"SEM_DEFAULT_MODEL='mine' is not served \(served: SmolLM2-135M-Instruct, world\)"
    ):
        Settings()
