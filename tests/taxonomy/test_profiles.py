"""The profile registry: bundled profiles load, and a bad profile is refused with the key and the allowed values."""

import tomllib

import pytest

import data_manifests
from taxonomy.profiles import AUTHORITIES, Profile, get_profile, list_profiles, load_profile, profile_from_dict


def bundled(name: str) -> dict:
    with open(data_manifests.path(f"taxonomy/profiles/{name}.toml"), "rb") as f:
        return tomllib.load(f)


def test_bundled_profiles():
    assert list_profiles() == ["bioclip-v1", "gbif-first"]
    for name in list_profiles():
        profile = get_profile(name)
        assert isinstance(profile, Profile) and profile.name == name
        assert sorted(profile.rank_precedence) == sorted(AUTHORITIES)


def test_bioclip_v1_is_the_papers_precedence():
    profile = get_profile("bioclip-v1")
    assert profile.as_given == ("inat21",)
    assert profile.rank_precedence == ("itis", "gbif", "inat", "eol")
    assert profile.common_name_precedence[1:5] == ("itis", "inat", "eol_preferred", "eol_english")
    assert profile.fuzzy.enabled and profile.fuzzy.max_distance == 2 and "bioscan" in profile.keep_partial
    assert profile.implied_ranks("bioscan") == ("Animalia", "Arthropoda", "Insecta")
    assert profile.implied_ranks("eol") == ()


def test_gbif_first_puts_gbif_first():
    profile = get_profile("gbif-first")
    assert profile.rank_precedence[0] == "gbif" and profile.common_name_precedence[0] == "gbif"
    assert profile.as_given == ()


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown taxonomy profile 'bioclip-v9'.*bioclip-v1, gbif-first"):
        get_profile("bioclip-v9")


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("ranks", "precedence", ["itis", "ncbi"], r"ranks.precedence names 'ncbi'; expected some of itis, gbif"),
    ("ranks", "precedence", [], "ranks.precedence is empty"),
    ("ranks", "precedence", ["itis", "itis"], "lists a value twice"),
    ("ranks", "homonym_ranks", ["genus"], "homonym_ranks names 'genus'"),
    ("ranks", "fill_missing", "yes", "fill_missing must be bool"),
    ("labels", "as_given", ["gbif"], "labels.as_given names 'gbif'"),
    ("common_names", "precedence", ["wikipedia"], "common_names.precedence names 'wikipedia'"),
    ("fuzzy", "max_distance", -1, "max_distance must be >= 0"),
    ("fuzzy", "max_distance", True, "max_distance must be int"),
    ("fuzzy", "speed", 3, r"unknown key\(s\) \['speed'\] in \[fuzzy\]"),
])
def test_bad_values_are_refused_naming_the_key(section, key, value, message):
    data = bundled("bioclip-v1")
    data[section][key] = value
    with pytest.raises(ValueError, match=message):
        profile_from_dict(data, "test.toml")


def test_missing_keys_and_bad_files_are_refused(tmp_path):
    data = bundled("gbif-first")
    del data["fuzzy"]
    with pytest.raises(ValueError, match=r"missing key\(s\) \['fuzzy'\]"):
        profile_from_dict(data)
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_profile(bad)


def test_a_profile_file_outside_the_registry_loads(tmp_path):
    text = data_manifests.path("taxonomy/profiles/bioclip-v1.toml").read_text(encoding="utf-8")
    custom = tmp_path / "mine.toml"
    custom.write_text(text.replace('name = "bioclip-v1"', 'name = "mine"'), encoding="utf-8")
    assert load_profile(custom).name == "mine"
