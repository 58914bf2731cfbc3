package androidx.camera.core;

/** Signature stub of CameraX's ImageInfo. */
public interface ImageInfo {
    int getRotationDegrees();
}
