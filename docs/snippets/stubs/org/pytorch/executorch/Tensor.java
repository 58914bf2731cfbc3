// Signature stub of org.pytorch.executorch.Tensor (executorch-android), for compiling docs only.
package org.pytorch.executorch;

public abstract class Tensor {
  public static Tensor fromBlob(float[] data, long[] shape) { throw new UnsupportedOperationException(); }
  public long[] shape() { throw new UnsupportedOperationException(); }
  public float[] getDataAsFloatArray() { throw new UnsupportedOperationException(); }
}
