// Signature stub of org.pytorch.executorch.Module (executorch-android), for compiling docs only.
package org.pytorch.executorch;

public class Module {
  public static Module load(String modelPath) { throw new UnsupportedOperationException(); }
  public static Module load(String modelPath, int loadMode) { throw new UnsupportedOperationException(); }
  public EValue[] forward(EValue... inputs) { throw new UnsupportedOperationException(); }
  public EValue[] execute(String methodName, EValue... inputs) { throw new UnsupportedOperationException(); }
  public void loadMethod(String methodName) { throw new UnsupportedOperationException(); }
  public void destroy() { throw new UnsupportedOperationException(); }
}
