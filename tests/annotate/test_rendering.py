"""Model text is rendered as markdown but raw HTML is always shown as text."""
from prefcore.text import render_markdown, word_diff


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
    html = render_markdown("[click](javascript:alert(1))")
    assert "href" not in html and "<a" not in html  # shown as the text it is, never a link


def test_word_diff_marks_changed_words_and_escapes():
    left, right, shown = word_diff("the cat <sat>", "the dog <sat>")
    assert shown and left == "the <del>cat</del> &lt;sat&gt;"
    assert right == "the <ins>dog</ins> &lt;sat&gt;"


LIST_AFTER_PARAGRAPH = "Here are the steps:\n1. Boil water.\n2. Add the tea."
NESTED = "- fruit\n  - apple\n  - pear\n- bread"


def test_a_list_right_after_a_paragraph_is_a_list():
    html = render_markdown(LIST_AFTER_PARAGRAPH)
    assert "<p>Here are the steps:</p>" in html
    assert "<ol>" in html and "<li>Boil water.</li>" in html and "<li>Add the tea.</li>" in html


def test_a_list_indented_two_spaces_nests():
    html = render_markdown(NESTED)
    assert html.count("<ul>") == 2
    inner = html.index("<ul>", html.index("<li>fruit") + 1)
    assert html.index("<li>apple</li>") > inner and html.index("<li>bread</li>") > html.index("</ul>", inner)


def test_label_and_compare_pages_render_an_answer_identically():
    from annotate.templatetags.annotate_text import model_text
    from compare.templatetags.compare_tags import answer

    for text in (LIST_AFTER_PARAGRAPH, NESTED, "| a | b |\n|---|---|\n| 1 | 2 |", "<b>x</b> ~~y~~"):
        assert model_text(text) == answer(text)
    assert "<table>" in answer("| a | b |\n|---|---|\n| 1 | 2 |")


def test_the_saved_line_names_side_strength_and_comment():
    from annotate.feedback import saved_line

    assert saved_line("right", "slight") == "Saved: right, slightly better"
    assert saved_line("left", "clear", "  why  ") == "Saved: left, clearly better, with a comment"
    assert saved_line("both_bad", "slight") == "Saved: both bad"  # a strength says nothing about a tie or both bad
    assert saved_line("tie", None, "") == "Saved: tie"
