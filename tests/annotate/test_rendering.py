"""Model text is rendered as markdown but raw HTML is always shown as text."""
from annotate.rendering import render_markdown, word_diff


def test_markdown_renders_code_blocks_and_emphasis():
    html = render_markdown("Some **bold** text\n\n```python\nif a < b:\n    pass\n```")
    assert "<strong>bold</strong>" in html
    assert "<pre><code" in html and "if a &lt; b:" in html


def test_raw_html_is_escaped_not_passed_through():
    html = render_markdown('<script>alert(1)</script> <img src=x onerror=alert(1)>\n\n<div onclick="x">y</div>')
    assert "<script" not in html and "<img" not in html and "<div" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "onerror=alert(1)" in html  # visible as text


def test_javascript_links_lose_their_target():
    assert "javascript:" not in render_markdown("[click](javascript:alert(1))")


def test_word_diff_marks_changed_words_and_escapes():
    left, right, shown = word_diff("the cat <sat>", "the dog <sat>")
    assert shown and left == "the <del>cat</del> &lt;sat&gt;"
    assert right == "the <ins>dog</ins> &lt;sat&gt;"


def test_the_saved_line_names_side_strength_and_comment():
    from annotate.rendering import saved_line

    assert saved_line("right", "slight") == "Saved: right, slightly better"
    assert saved_line("left", "clear", "  why  ") == "Saved: left, clearly better, with a comment"
    assert saved_line("both_bad", "slight") == "Saved: both bad"  # a strength says nothing about a tie or both bad
    assert saved_line("tie", None, "") == "Saved: tie"
