package android.graphics;

/** Signature stub of android.graphics.Rect. */
public final class Rect {
    public int left, top, right, bottom;
    public int width() { return right - left; }
    public int height() { return bottom - top; }
}
