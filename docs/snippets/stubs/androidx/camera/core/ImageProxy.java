package androidx.camera.core;

import android.graphics.Rect;
import java.nio.ByteBuffer;

/** Signature stub of CameraX's ImageProxy (androidx.camera:camera-core). */
public interface ImageProxy extends AutoCloseable {
    interface PlaneProxy {
        int getRowStride();
        int getPixelStride();
        ByteBuffer getBuffer();
    }
    PlaneProxy[] getPlanes();
    int getWidth();
    int getHeight();
    Rect getCropRect();
    ImageInfo getImageInfo();
    void close();
}
