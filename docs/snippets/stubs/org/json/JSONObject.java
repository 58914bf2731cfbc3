// Signature stub of org.json.JSONObject (Android SDK), for compiling docs only.
package org.json;

public class JSONObject {
  public JSONObject(String json) throws JSONException { throw new UnsupportedOperationException(); }
  public JSONObject getJSONObject(String name) throws JSONException { throw new UnsupportedOperationException(); }
  public JSONArray getJSONArray(String name) throws JSONException { throw new UnsupportedOperationException(); }
  public String getString(String name) throws JSONException { throw new UnsupportedOperationException(); }
  public boolean getBoolean(String name) throws JSONException { throw new UnsupportedOperationException(); }
}
