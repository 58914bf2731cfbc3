// Signature stub of android.graphics.Bitmap (Android SDK), for compiling docs only.
package android.graphics;

public final class Bitmap {
  public static Bitmap createScaledBitmap(Bitmap src, int dstWidth, int dstHeight, boolean filter) {
    throw new UnsupportedOperationException();
  }
  public int getWidth() { throw new UnsupportedOperationException(); }
  public int getHeight() { throw new UnsupportedOperationException(); }
  public void getPixels(int[] pixels, int offset, int stride, int x, int y, int width, int height) {
    throw new UnsupportedOperationException();
  }
}
